"""Typed fields and tags on customers (issue 29): the rules, pure (no I/O).

Definitions come from contracts.fields, as do the rules on versions and tag changes (shared
with case). This module decides the values a PUT sets and what a list filter asks for. A merged
customer's view (docs/customer-fields.md): the survivor's own values, then, for fields the
survivor never set, the value its merged ids set last; tags likewise. A survivor's own
"cleared" (a null value, a removed tag) hides what merged ids hold.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contracts.fields import FieldDefinition, FieldValueError, same_value, validate_value
from intake.domain import InvalidInput

CASE_ONLY = ("case_types", "required_to_resolve")


class PersonalField(InvalidInput):
    """A filter on a personal field: its values are sealed, there is nothing to compare."""


def check_definition(definition: FieldDefinition) -> None:
    """Customer fields have no case types and nothing to resolve: refuse what only cases have."""
    for name in CASE_ONLY:
        if name in definition.model_fields_set and getattr(definition, name) not in (None, False):
            raise InvalidInput(f"body.{name}", "cases only: customer fields have no case types or resolution")


@dataclass(frozen=True)
class FieldChange:
    """What one PUT .../fields changes: values (non-personal), personal (to seal), by name."""

    values: dict[str, Any]
    personal: dict[str, Any]

    @property
    def changed(self) -> list[str]:
        return sorted({*self.values, *self.personal})


def field_changes(
    definitions: Mapping[str, FieldDefinition], current: Mapping[str, Any], wanted: Mapping[str, Any]
) -> FieldChange:
    """The values to set (validated), leaving out those already so; InvalidInput names the first
    bad one as values.<name>. `current`: the customer's view now (personal ones unsealed)."""
    values: dict[str, Any] = {}
    personal: dict[str, Any] = {}
    for name in sorted(wanted):
        definition = definitions.get(name)
        if definition is None:
            raise InvalidInput(f"values.{name}", "no such customer field (see GET /v1/admin/fields)")
        try:
            value = validate_value(definition, wanted[name])
        except FieldValueError as exc:
            raise InvalidInput(f"values.{name}", exc.reason) from exc
        if same_value(current.get(name), value):
            continue
        (personal if definition.personal else values)[name] = value
    return FieldChange(values, personal)


def value_key(value: Any) -> str | None:
    """How a non-personal value is indexed for filters: the text a query would give."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return str(value)


def filter_key(definition: FieldDefinition, text: str, field: str) -> str:
    """The value_key a filter `field.<name>=<text>` looks for, or InvalidInput naming `field`."""
    if definition.personal:
        raise PersonalField(field, "personal_field")
    value: Any = text
    if definition.type == "bool":
        value = {"true": True, "false": False}.get(text, text)
    elif definition.type == "number":
        try:
            value = int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            value = text
        if isinstance(value, float) and not math.isfinite(value):
            value = text
    try:
        key = value_key(validate_value(definition, value))
    except FieldValueError as exc:
        raise InvalidInput(field, exc.reason) from exc
    if key is None:
        raise InvalidInput(field, "give a value")
    return key
