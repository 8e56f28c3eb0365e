"""Decisions on case fields and tags (issue 29): define a field, set values, change tags. Pure.

- A field's type and whether it is personal are fixed once defined: a new meaning needs a new
  name, and a field turned personal would leave its earlier values readable in the events.
- Enum values may be removed: values set before stay as they are; new ones must be current.
- Setting a value to what it is, or tags to what they are, decides nothing (no event).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from case.domain import CaseState, Conflict, Draft, Invalid, draft
from case.field_rules import Definitions
from contracts import fields as f


def define(defs: Definitions, definition: f.FieldDefinition, by: str) -> Draft | None:
    """The definition event, or None if the field is defined exactly so already."""
    current = defs.current.get(definition.name)
    if current is None and len(defs.current) >= f.FIELDS_PER_RECORD_MAX:
        raise Conflict(
            "too_many_fields",
            f"cases have {f.FIELDS_PER_RECORD_MAX} fields already, the most there may be",
            errors=[{"field": "name", "reason": f"at most {f.FIELDS_PER_RECORD_MAX} case fields"}],
        )
    if current is not None:
        if current.definition == definition:
            return None
        if current.definition.type != definition.type:
            raise Conflict(
                "field_type_fixed",
                f"{definition.name} is a {current.definition.type} field; a new type needs a new name",
                errors=[{"field": "type", "reason": f"fixed: {current.definition.type}"}],
            )
        if current.definition.personal != definition.personal:
            raise Conflict(
                "field_personal_fixed",
                f"whether {definition.name} is personal is fixed; a new name is needed",
                errors=[{"field": "personal", "reason": f"fixed: {str(current.definition.personal).lower()}"}],
            )
    return draft(
        f.CASE_FIELD_DEFINED,
        record="case",
        definition=definition,
        version=current.version + 1 if current else 1,
        defined_by=by,
    )


def set_fields(
    state: CaseState, definitions: Mapping[str, f.FieldDefinition], values: Mapping[str, Any], by: str
) -> list[Draft]:
    """Validate each value against its definition (all errors at once); personal values go to
    `personal` as personal_text, to be sealed. `state.personal` must be unsealed to tell a
    no-op from a change."""
    errors: list[dict[str, str]] = []
    readable: dict[str, Any] = {}
    personal: dict[str, str | None] = {}
    for name, raw in values.items():
        definition = definitions.get(name)
        if definition is None:
            errors.append({"field": f"values.{name}", "reason": "unknown field"})
            continue
        if not f.applies_to(definition, state.type):
            errors.append({"field": f"values.{name}", "reason": f"the field does not apply to {state.type} cases"})
            continue
        try:
            value = f.validate_value(definition, raw)
        except f.FieldValueError as exc:
            errors.append({"field": f"values.{name}", "reason": exc.reason})
            continue
        if definition.personal:
            if f.personal_value(state.personal.get(name)) != value or (value is None) != (name not in state.personal):
                personal[name] = f.personal_text(value)
        elif _differs(state.fields.get(name), value):
            readable[name] = value
    if errors:
        raise Invalid("validation_failed", "some field values are not valid", errors=errors)
    changed = sorted([*readable, *personal])
    if not changed:
        return []
    return [
        draft(
            f.CASE_FIELDS_SET,
            **state.base(),
            type=state.type,
            values=readable,
            personal=personal,
            changed=changed,
            set_by=by,
        )
    ]


def _differs(old: Any, new: Any) -> bool:
    # True == 1 in Python; a field has one type, but say so anyway.
    return type(old) is not type(new) or old != new


def change_tags(state: CaseState, add: Sequence[str], remove: Sequence[str], by: str) -> list[Draft]:
    """Normalised tags added and removed (a tag in both is refused); the whole set after it."""
    errors: list[dict[str, str]] = []
    normal: dict[str, list[str]] = {"add": [], "remove": []}
    for side, tags in (("add", add), ("remove", remove)):
        for i, tag in enumerate(tags):
            try:
                normal[side].append(f.normalise_tag(tag))
            except ValueError as exc:
                errors.append({"field": f"{side}.{i}", "reason": str(exc)})
    both = sorted(set(normal["add"]) & set(normal["remove"]))
    errors += [{"field": "remove", "reason": f"{tag} is also added"} for tag in both]
    if errors:
        raise Invalid("validation_failed", "some tags are not valid", errors=errors)
    before = set(state.tags)
    after = (before | set(normal["add"])) - set(normal["remove"])
    if after == before:
        return []
    if len(after) > f.TAGS_PER_RECORD_MAX:
        raise Conflict(
            "too_many_tags",
            f"a case has at most {f.TAGS_PER_RECORD_MAX} tags; remove some first",
            errors=[{"field": "add", "reason": f"at most {f.TAGS_PER_RECORD_MAX} tags per case"}],
        )
    return [
        draft(
            f.CASE_TAGS_CHANGED,
            **state.base(),
            added=sorted(after - before),
            removed=sorted(before - after),
            tags=sorted(after),
            changed_by=by,
        )
    ]
