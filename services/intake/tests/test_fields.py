"""The rules of customer fields and tags (intake.fields), without a database."""

import pytest

from contracts.fields import FIELDS_PER_RECORD_MAX, TAGS_PER_RECORD_MAX, FieldDefinition
from intake import fields
from intake.domain import InvalidInput

TEXT = FieldDefinition(name="model", type="text")
ENUM = FieldDefinition(name="failure", type="enum", values=["wifi", "power"])
NUMBER = FieldDefinition(name="count", type="number")
FLAG = FieldDefinition(name="ok", type="bool")
SECRET = FieldDefinition(name="note", type="text", personal=True)
DEFS = {d.name: d for d in (TEXT, ENUM, NUMBER, FLAG, SECRET)}


def test_case_only_settings_are_refused_on_customer_fields() -> None:
    fields.check_definition(FieldDefinition(name="a", type="text", personal=True))
    for extra in ({"case_types": ["billing"]}, {"required_to_resolve": True}):
        with pytest.raises(InvalidInput) as caught:
            fields.check_definition(FieldDefinition.model_validate({"name": "a", "type": "text", **extra}))
        assert caught.value.field == f"body.{next(iter(extra))}"


def test_versions_count_redefinitions_and_the_type_stays() -> None:
    assert fields.next_version({}, ENUM) == 1
    assert fields.next_version({"failure": (1, ENUM)}, ENUM) is None
    fewer = FieldDefinition(name="failure", type="enum", values=["wifi"])
    assert fields.next_version({"failure": (1, ENUM)}, fewer) == 2
    with pytest.raises(fields.FieldTypeFixed):
        fields.next_version({"failure": (2, ENUM)}, FieldDefinition(name="failure", type="text"))
    full = {f"f{n}": (1, TEXT) for n in range(FIELDS_PER_RECORD_MAX)}
    with pytest.raises(fields.TooManyFields):
        fields.next_version(full, ENUM)
    assert fields.next_version(full, FieldDefinition(name="f1", type="text", label="F")) == 2


def test_changes_leave_out_what_is_already_so_and_split_personal_values() -> None:
    current = {"model": "RX", "count": 2, "ok": True}
    change = fields.field_changes(DEFS, current, {"model": "RX", "count": 2.0, "ok": None, "note": "hi"})
    assert change.values == {"ok": None}
    assert change.personal == {"note": "hi"}
    assert change.changed == ["note", "ok"]
    assert fields.field_changes(DEFS, current, {"ok": True}).changed == []
    assert fields.field_changes(DEFS, {"count": 1}, {"count": 1.5}).values == {"count": 1.5}


@pytest.mark.parametrize(
    ("wanted", "field"),
    [({"nobody": 1}, "values.nobody"), ({"count": True}, "values.count"), ({"failure": "fire"}, "values.failure")],
)
def test_unknown_fields_and_bad_values_name_the_field(wanted: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        fields.field_changes(DEFS, {}, wanted)
    assert caught.value.field == field and caught.value.reason


def test_filters_compare_the_indexed_text_of_a_value() -> None:
    assert fields.value_key(True) == fields.filter_key(FLAG, "true", "q") == "true"
    assert fields.value_key(2) == fields.filter_key(NUMBER, "2", "q") == fields.filter_key(NUMBER, "2.0", "q") == "2"
    assert fields.value_key(2.5) == fields.filter_key(NUMBER, "2.5", "q")
    assert fields.filter_key(ENUM, "wifi", "q") == "wifi"
    for definition, text in ((NUMBER, "two"), (NUMBER, "nan"), (FLAG, "yes"), (ENUM, "fire"), (TEXT, "")):
        with pytest.raises(InvalidInput):
            fields.filter_key(definition, text, "q")
    with pytest.raises(fields.PersonalField) as caught:
        fields.filter_key(SECRET, "x", "query.field.note")
    assert (caught.value.field, caught.value.reason) == ("query.field.note", "personal_field")


def test_tag_changes_are_normalised_and_bounded() -> None:
    change = fields.tag_change({"vip"}, ["  Repeat Caller", "VIP"], ["gone"])
    assert (change.added, change.removed, change.tags) == (["repeat-caller"], [], ["repeat-caller", "vip"])
    change = fields.tag_change({"vip", "old"}, [], ["OLD"])
    assert (change.added, change.removed, change.tags) == ([], ["old"], ["vip"])
    with pytest.raises(InvalidInput) as caught:
        fields.tag_change(set(), ["ok", "not/ok"], [])
    assert caught.value.field == "add.1"
    with pytest.raises(InvalidInput):
        fields.tag_change(set(), ["a"], ["A"])
    with pytest.raises(InvalidInput):
        fields.tag_change({f"t{n}" for n in range(TAGS_PER_RECORD_MAX)}, ["one-more"], [])
