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
    try:
        version = f.next_version(
            (current.version, current.definition) if current else None, len(defs.current), definition
        )
    except f.FieldRuleError as exc:
        raise Conflict(exc.error, str(exc), errors=[{"field": exc.field, "reason": exc.reason}]) from exc
    if version is None:
        return None
    return draft(f.CASE_FIELD_DEFINED, record="case", definition=definition, version=version, defined_by=by)


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
        elif not f.same_value(state.fields.get(name), value):
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


def change_tags(state: CaseState, add: Sequence[str], remove: Sequence[str], by: str) -> list[Draft]:
    """Normalised tags added and removed (a tag in both is refused); the whole set after it."""
    try:
        change = f.tag_change(state.tags, add, remove)
    except f.TagErrors as exc:
        raise Invalid("validation_failed", "some tags are not valid", errors=exc.errors) from exc
    except f.FieldRuleError as exc:
        raise Conflict(exc.error, str(exc), errors=[{"field": exc.field, "reason": exc.reason}]) from exc
    if not change.added and not change.removed:
        return []
    return [
        draft(
            f.CASE_TAGS_CHANGED,
            **state.base(),
            added=change.added,
            removed=change.removed,
            tags=change.tags,
            changed_by=by,
        )
    ]
