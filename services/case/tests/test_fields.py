"""Case fields and tags, the pure rules: definitions and their versions, values validated against
them (personal ones apart, for sealing), no-ops decide nothing, tags normalised and bounded, and
a field required to resolve blocks the resolution."""

from datetime import datetime

import pytest

from case import domain, fields
from case.domain import CaseState, Conflict, Invalid
from case.field_rules import Definitions
from case.tests.support import RULES, fold, new_case, step, utc
from contracts import fields as f

AT = utc(2026, 1, 5, 9)


def defs_of(*definitions: f.FieldDefinition) -> Definitions:
    defs = Definitions()
    for d in definitions:
        decided = fields.define(defs, d, "admin-key")
        assert decided is not None
        defs.apply(decided.type, decided.data, AT)
    return defs


MODEL = f.FieldDefinition(name="model", type="enum", values=["a1", "b2"], required_to_resolve=True)
BOUGHT = f.FieldDefinition(name="bought_on", type="date", case_types=["complaint"])
SERIAL = f.FieldDefinition(name="serial", type="text", personal=True)
COUNT = f.FieldDefinition(name="repairs", type="number", case_types=["billing"])


def test_a_field_is_defined_at_version_1_and_each_redefinition_adds_one() -> None:
    defs = Definitions()
    first = fields.define(defs, MODEL, "k1")
    assert first is not None and first.type == f.CASE_FIELD_DEFINED
    assert (first.data["version"], first.data["record"], first.data["defined_by"]) == (1, "case", "k1")
    defs.apply(first.type, first.data, AT)
    assert fields.define(defs, MODEL, "k1") is None  # the same definition again: nothing to store
    fewer = MODEL.model_copy(update={"values": ["b2"]})  # removing an enum value is allowed
    second = fields.define(defs, fewer, "k2")
    assert second is not None and second.data["version"] == 2
    defs.apply(second.type, second.data, AT)
    assert defs.current["model"].definition.values == ["b2"] and defs.current["model"].version == 2


def test_a_fields_type_and_personal_flag_are_fixed() -> None:
    defs = defs_of(MODEL, SERIAL)
    with pytest.raises(Conflict) as exc:
        fields.define(defs, f.FieldDefinition(name="model", type="text"), "k")
    assert exc.value.error == "field_type_fixed"
    with pytest.raises(Conflict) as exc:
        fields.define(defs, SERIAL.model_copy(update={"personal": False}), "k")
    assert exc.value.error == "field_personal_fixed"


def test_no_more_fields_than_the_maximum() -> None:
    defs = defs_of(*(f.FieldDefinition(name=f"f{i}", type="bool") for i in range(f.FIELDS_PER_RECORD_MAX)))
    with pytest.raises(Conflict) as exc:
        fields.define(defs, f.FieldDefinition(name="one_more", type="bool"), "k")
    assert exc.value.error == "too_many_fields"
    assert fields.define(defs, f.FieldDefinition(name="f0", type="bool", label="F0"), "k") is not None


def test_values_are_validated_and_personal_ones_set_apart_for_sealing() -> None:
    state = new_case(AT)
    definitions = defs_of(MODEL, BOUGHT, SERIAL).definitions()
    [d] = fields.set_fields(state, definitions, {"model": "a1", "bought_on": "2025-12-01", "serial": "SN-1"}, "k")
    assert d.type == f.CASE_FIELDS_SET
    assert d.data["values"] == {"model": "a1", "bought_on": "2025-12-01"}
    assert d.data["personal"] == {"serial": '"SN-1"'} and d.data["changed"] == ["bought_on", "model", "serial"]
    assert (d.data["type"], d.data["set_by"]) == ("complaint", "k")
    fold(state, [d], AT)
    assert state.fields == {"model": "a1", "bought_on": "2025-12-01"} and state.personal == {"serial": '"SN-1"'}
    # The same values again decide nothing; null clears.
    assert fields.set_fields(state, definitions, {"model": "a1", "serial": "SN-1"}, "k") == []
    [cleared] = fields.set_fields(state, definitions, {"model": None, "serial": None}, "k")
    assert cleared.data["values"] == {"model": None} and cleared.data["personal"] == {"serial": None}
    fold(state, [cleared], AT)
    assert "model" not in state.fields and state.personal == {}
    assert fields.set_fields(state, definitions, {"model": None}, "k") == []


def test_every_bad_value_is_named_at_once() -> None:
    state = new_case(AT)  # a complaint: repairs is for billing cases
    definitions = defs_of(MODEL, BOUGHT, COUNT).definitions()
    with pytest.raises(Invalid) as exc:
        fields.set_fields(state, definitions, {"model": "z9", "bought_on": "1.12.2025", "repairs": 1, "nope": 1}, "k")
    errors = {e["field"]: e["reason"] for e in exc.value.extra["errors"]}
    assert errors == {
        "values.model": "not one of the field's values",
        "values.bought_on": "expected a date YYYY-MM-DD",
        "values.repairs": "the field does not apply to complaint cases",
        "values.nope": "unknown field",
    }


def test_a_value_of_a_removed_enum_value_stays_but_new_ones_must_be_current() -> None:
    state = new_case(AT)
    defs = defs_of(MODEL)
    fold(state, fields.set_fields(state, defs.definitions(), {"model": "a1"}, "k"), AT)
    redefined = fields.define(defs, MODEL.model_copy(update={"values": ["b2"]}), "k")
    assert redefined is not None
    defs.apply(redefined.type, redefined.data, AT)
    assert state.fields["model"] == "a1"
    with pytest.raises(Invalid):
        fields.set_fields(state, defs.definitions(), {"model": "a1"}, "k")  # even the value it has


def test_tags_are_normalised_bounded_and_their_whole_set_carried() -> None:
    state = new_case(AT)
    [d] = fields.change_tags(state, ["  Needs Parts ", "VIP"], [], "k")
    assert (d.data["added"], d.data["removed"], d.data["tags"]) == (["needs-parts", "vip"], [], ["needs-parts", "vip"])
    fold(state, [d], AT)
    assert state.tags == ["needs-parts", "vip"]
    assert fields.change_tags(state, ["vip"], ["absent"], "k") == []  # nothing changes
    [d] = fields.change_tags(state, ["later"], ["VIP"], "k")
    assert (d.data["added"], d.data["removed"], d.data["tags"]) == (["later"], ["vip"], ["later", "needs-parts"])
    with pytest.raises(Invalid) as exc:
        fields.change_tags(state, ["ok", "no/slash", ""], ["ok"], "k")
    assert [e["field"] for e in exc.value.extra["errors"]] == ["add.1", "add.2", "remove"]
    fold(state, [d], AT)
    with pytest.raises(Conflict) as conflict:
        fields.change_tags(state, [f"t{i}" for i in range(f.TAGS_PER_RECORD_MAX - 1)], [], "k")
    assert conflict.value.error == "too_many_tags"


def resolvable(at: datetime) -> CaseState:
    return step(new_case(at), "open", at)


def test_a_field_required_to_resolve_blocks_resolution_until_it_has_a_value() -> None:
    state = resolvable(AT)
    definitions = defs_of(MODEL, COUNT.model_copy(update={"required_to_resolve": True})).definitions()
    with pytest.raises(Conflict) as exc:
        domain.change_status(state, "resolved", None, AT, RULES, definitions)
    assert exc.value.error == "fields_required"
    # Only the fields of the case's type: repairs is for billing cases.
    assert exc.value.extra["errors"] == [{"field": "fields.model", "reason": "required to resolve"}]
    assert domain.change_status(state, "pending", None, AT, RULES, definitions)  # other steps go on
    fold(state, fields.set_fields(state, definitions, {"model": "b2"}, "k"), AT)
    assert domain.change_status(state, "resolved", None, AT, RULES, definitions)[0].data["to_status"] == "resolved"


def test_a_personal_required_field_counts_when_sealed() -> None:
    state = resolvable(AT)
    required = SERIAL.model_copy(update={"required_to_resolve": True})
    state.apply(f.CASE_FIELDS_SET, {"values": {}, "personal": {"serial": "[sealed]"}}, AT)
    assert domain.change_status(state, "resolved", None, AT, RULES, {"serial": required})
