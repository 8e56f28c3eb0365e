"""Typed fields and tags on customers (issue 29): the rules, pure (no I/O).

Definitions come from contracts.fields; this module decides what a request changes: a new or
redefined definition, the values a PUT sets, the tags a POST adds and removes, and what a list
filter asks for. A merged customer's view (docs/customer-fields.md): the survivor's own values,
then, for fields the survivor never set, the value its merged ids set last; tags likewise.
A survivor's own "cleared" (a null value, a removed tag) hides what merged ids hold.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contracts.fields import (
    FIELDS_PER_RECORD_MAX,
    TAGS_PER_RECORD_MAX,
    FieldDefinition,
    FieldValueError,
    normalise_tag,
    validate_value,
)
from intake.domain import InvalidInput

CASE_ONLY = ("case_types", "required_to_resolve")


class FieldTypeFixed(Exception):
    """A redefinition may not change the field's type (values already set would not fit)."""

    def __init__(self, name: str, old: str, new: str) -> None:
        super().__init__(f"field {name} is a {old}; its type cannot become {new}")
        self.old = old


class TooManyFields(Exception):
    pass


class PersonalField(InvalidInput):
    """A filter on a personal field: its values are sealed, there is nothing to compare."""


def check_definition(definition: FieldDefinition) -> None:
    """Customer fields have no case types and nothing to resolve: refuse what only cases have."""
    for name in CASE_ONLY:
        if name in definition.model_fields_set and getattr(definition, name) not in (None, False):
            raise InvalidInput(f"body.{name}", "cases only: customer fields have no case types or resolution")


def next_version(current: Mapping[str, tuple[int, FieldDefinition]], definition: FieldDefinition) -> int | None:
    """The version the definition gets (1: new), or None when it is the same as the current one."""
    found = current.get(definition.name)
    if found is None:
        if len(current) >= FIELDS_PER_RECORD_MAX:
            raise TooManyFields(f"at most {FIELDS_PER_RECORD_MAX} customer fields")
        return 1
    version, old = found
    if old.type != definition.type:
        raise FieldTypeFixed(definition.name, old.type, definition.type)
    return None if old == definition else version + 1


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
        if _same(current.get(name), value):
            continue
        (personal if definition.personal else values)[name] = value
    return FieldChange(values, personal)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # True is not 1, 1 is not 1.0 here


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


@dataclass(frozen=True)
class TagChange:
    added: list[str]
    removed: list[str]
    tags: list[str]


def tag_change(current: set[str], add: list[str], remove: list[str]) -> TagChange:
    """Normalised tags added and removed (only those that change) and the whole set after."""
    norm_add = _normalised(add, "add")
    norm_remove = _normalised(remove, "remove")
    both = sorted(set(norm_add) & set(norm_remove))
    if both:
        raise InvalidInput("remove", f"tag {both[0]} is both added and removed")
    after = (current | set(norm_add)) - set(norm_remove)
    if len(after) > TAGS_PER_RECORD_MAX:
        raise InvalidInput("add", f"at most {TAGS_PER_RECORD_MAX} tags on a customer")
    return TagChange(sorted(after - current), sorted(current - after), sorted(after))


def _normalised(tags: list[str], where: str) -> list[str]:
    out: list[str] = []
    for n, tag in enumerate(tags):
        try:
            out.append(normalise_tag(tag))
        except ValueError as exc:
            raise InvalidInput(f"{where}.{n}", str(exc)) from exc
    return out
