"""The shared rules for typed fields and tags (contracts/fields.py): what a value and a tag may be."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.fields import (
    FIELDS_PER_RECORD_MAX,
    TAGS_PER_RECORD_MAX,
    FieldDefinition,
    FieldRuleError,
    FieldValueError,
    TagErrors,
    next_version,
    normalise_tag,
    personal_text,
    personal_value,
    tag_change,
    validate_value,
)


def defn(type_: str, **kw: object) -> FieldDefinition:
    return FieldDefinition.model_validate({"name": "f", "type": type_, **kw})


@pytest.mark.parametrize(
    ("type_", "extra", "value", "stored"),
    [
        ("text", {}, "broken hinge", "broken hinge"),
        ("number", {}, 3, 3),
        ("number", {}, 3.0, 3),
        ("number", {}, 2.5, 2.5),
        ("date", {}, "2026-03-01", "2026-03-01"),
        ("enum", {"values": ["motor", "door"]}, "door", "door"),
        ("bool", {}, False, False),
        ("text", {}, None, None),
    ],
)
def test_a_fitting_value_is_stored_normalised(type_: str, extra: dict, value: object, stored: object) -> None:
    assert validate_value(defn(type_, **extra), value) == stored


@pytest.mark.parametrize(
    ("type_", "extra", "value", "reason"),
    [
        ("number", {}, True, "expected a number"),
        ("number", {}, "3", "expected a number"),
        ("number", {}, float("inf"), "expected a finite number"),
        ("date", {}, "2026-02-30", "expected a date YYYY-MM-DD"),
        ("date", {}, "2026-02-03T10:00:00", "expected a date YYYY-MM-DD"),
        ("enum", {"values": ["motor"]}, "Motor", "not one of the field's values"),
        ("bool", {}, "true", "expected true or false"),
        ("text", {}, "   ", "empty text; send null to clear the field"),
        ("text", {}, "x" * 2001, "longer than 2000 characters"),
        ("text", {}, "a\x00b", "control characters"),
    ],
)
def test_a_value_that_does_not_fit_says_why(type_: str, extra: dict, value: object, reason: str) -> None:
    with pytest.raises(FieldValueError) as exc:
        validate_value(defn(type_, **extra), value)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    "body",
    [
        {"name": "f", "type": "enum"},
        {"name": "f", "type": "enum", "values": ["a", "a"]},
        {"name": "f", "type": "text", "values": ["a"]},
        {"name": "Bad Name", "type": "text"},
        {"name": "f", "type": "money"},
        {"name": "f", "type": "text", "case_types": ["nonsense"]},
        {"name": "f", "type": "text", "colour": "red"},
    ],
)
def test_a_bad_definition_is_refused(body: dict) -> None:
    with pytest.raises(ValidationError):
        FieldDefinition.model_validate(body)


@pytest.mark.parametrize(
    ("raw", "tag"), [("VIP", "vip"), ("  Needs Callback ", "needs-callback"), ("warranty:2y", "warranty:2y")]
)
def test_tags_are_normalised(raw: str, tag: str) -> None:
    assert normalise_tag(raw) == tag


@pytest.mark.parametrize("raw", ["", "  ", "-x", "a" * 65, "ümlaut", "a/b", "<script>"])
def test_what_is_not_a_tag_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="a tag is"):
        normalise_tag(raw)


@given(st.one_of(st.text(max_size=50), st.integers(-(2**53), 2**53), st.booleans(), st.none()))
def test_a_personal_value_survives_its_sealed_text(value: object) -> None:
    assert personal_value(personal_text(value)) == value


ENUM = FieldDefinition(name="failure", type="enum", values=["wifi", "power"])


def test_versions_count_redefinitions_and_type_and_privacy_stay() -> None:
    assert next_version(None, 0, ENUM) == 1
    assert next_version((1, ENUM), 1, ENUM) is None
    fewer = FieldDefinition(name="failure", type="enum", values=["wifi"])
    assert next_version((1, ENUM), 1, fewer) == 2
    for changed, error in (
        (FieldDefinition(name="failure", type="text"), "field_type_fixed"),
        (ENUM.model_copy(update={"personal": True}), "field_personal_fixed"),
    ):
        with pytest.raises(FieldRuleError) as caught:
            next_version((2, ENUM), 1, changed)
        assert caught.value.error == error
    with pytest.raises(FieldRuleError) as caught:
        next_version(None, FIELDS_PER_RECORD_MAX, ENUM)
    assert (caught.value.error, caught.value.field) == ("too_many_fields", "name")
    assert next_version((1, ENUM), FIELDS_PER_RECORD_MAX, fewer) == 2  # a redefinition is not one more


def test_tag_changes_are_normalised_and_bounded() -> None:
    change = tag_change({"vip"}, ["  Repeat Caller", "VIP"], ["gone"])
    assert (change.added, change.removed, change.tags) == (["repeat-caller"], [], ["repeat-caller", "vip"])
    change = tag_change({"vip", "old"}, [], ["OLD"])
    assert (change.added, change.removed, change.tags) == ([], ["old"], ["vip"])
    with pytest.raises(TagErrors) as bad:
        tag_change(set(), ["ok", "not/ok"], ["x/"])
    assert [e["field"] for e in bad.value.errors] == ["add.1", "remove.0"]
    with pytest.raises(TagErrors) as bad:
        tag_change(set(), ["a"], ["A"])
    assert bad.value.errors == [{"field": "remove", "reason": "a is also added"}]
    full = {f"t{n}" for n in range(TAGS_PER_RECORD_MAX)}
    with pytest.raises(FieldRuleError) as caught:
        tag_change(full, ["one-more"], [])
    assert caught.value.error == "too_many_tags"
    assert tag_change(full, ["t1"], []).added == []  # adding what is there changes nothing
