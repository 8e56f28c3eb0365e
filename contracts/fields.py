"""Typed fields and tags on cases and customers (issue 29): their definitions, values and events.

An admin defines a field at run time (`POST /v1/admin/fields`, on case for cases, on intake for
customers); each definition is an event with a version, about the field, not a customer
(subject `field:<record>:<name>`, on no timeline). Values are set by events about the record
(`crm.case.fields_set.v1`, `crm.customer.fields_set.v1`): non-personal values readable in
`values`, personal ones as JSON text in `personal`, sealed under the customer's data key, so
erasure makes them unreadable like every other personal field. A value once valid stays readable
when a later version removes it from an enum: validation applies to new values only.

Tags are short labels, normalised by `normalise_tag`, never personal data (the alphabet is
narrow on purpose, so they can be filtered and reported on and carry no free text).
"""

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

from contracts import topics
from contracts.case import CaseEvent, CaseType
from contracts.events import EventData, EventType, SealedData

FieldType = Literal["text", "number", "date", "enum", "bool"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
Record = Literal["case", "customer"]

FIELD_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
TEXT_MAX = 2000
ENUM_VALUES_MAX = 100
ENUM_VALUE_MAX = 100
FIELDS_PER_RECORD_MAX = 100  # definitions per record kind
TAG_MAX = 64
TAGS_PER_RECORD_MAX = 50
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")

# A value as JSON carries it; None clears the field.
FieldValue = StrictBool | StrictInt | StrictFloat | str


class FieldDefinition(BaseModel):
    """What an admin posts to /v1/admin/fields, and what each definition event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=FIELD_NAME_PATTERN, description="Lower case, digits, _; used as field.<name>.")
    type: FieldType
    values: list[str] | None = Field(
        default=None,
        max_length=ENUM_VALUES_MAX,
        description="The allowed values of an enum (required for enum, refused otherwise).",
    )
    label: str | None = Field(default=None, max_length=100, description="What the console shows; the name if none.")
    case_types: list[CaseType] | None = Field(
        default=None, description="Cases only: the case types the field applies to; all when absent."
    )
    personal: bool = Field(
        default=False, description="Personal data: sealed under the customer's data key, unreadable after erasure."
    )
    required_to_resolve: bool = Field(
        default=False, description="Cases only: a case without a value cannot be resolved (409)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "FieldDefinition":
        if self.type == "enum":
            if not self.values:
                raise ValueError("an enum field needs values")
            if len(set(self.values)) != len(self.values):
                raise ValueError("enum values must be distinct")
            if any(not v.strip() or len(v) > ENUM_VALUE_MAX for v in self.values):
                raise ValueError(f"enum values must be 1 to {ENUM_VALUE_MAX} characters and not blank")
        elif self.values is not None:
            raise ValueError("values are for enum fields only")
        return self


def applies_to(definition: FieldDefinition, case_type: str | None) -> bool:
    """Whether a case of `case_type` has this field (customers have every customer field)."""
    return definition.case_types is None or case_type is None or case_type in definition.case_types


class FieldValueError(ValueError):
    """The value does not fit the definition; `reason` is machine-readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def validate_value(definition: FieldDefinition, value: Any) -> Any:
    """The value to store (a date as YYYY-MM-DD, an integral number as int), or FieldValueError.

    None clears the field and is always valid."""
    if value is None:
        return None
    kind = definition.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise FieldValueError("expected true or false")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldValueError("expected a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldValueError("expected a finite number")
        if isinstance(value, int) and abs(value) > 2**53:
            raise FieldValueError("number out of range")
        return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 else value
    if not isinstance(value, str):
        raise FieldValueError(f"expected a {'date' if kind == 'date' else 'string'}")
    if kind == "date":
        try:
            return date.fromisoformat(value).isoformat() if len(value) == 10 else _bad_date()
        except ValueError as exc:
            raise FieldValueError("expected a date YYYY-MM-DD") from exc
    if kind == "enum":
        if value not in (definition.values or ()):
            raise FieldValueError("not one of the field's values")
        return value
    if not value.strip():
        raise FieldValueError("empty text; send null to clear the field")
    if len(value) > TEXT_MAX:
        raise FieldValueError(f"longer than {TEXT_MAX} characters")
    if any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise FieldValueError("control characters")
    return value


def _bad_date() -> str:
    raise ValueError("not YYYY-MM-DD")


def personal_text(value: Any) -> str | None:
    """A personal value as the text that is sealed (JSON, so numbers and booleans survive)."""
    return None if value is None else json.dumps(value, ensure_ascii=False)


def personal_value(text: str | None) -> Any:
    """The value back from personal_text; "[erased]" (or any non-JSON) comes back as it is."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class FieldRuleError(Exception):
    """A request that conflicts with what exists (409): `error` and one `field`/`reason` say why."""

    def __init__(self, error: str, message: str, field: str, reason: str) -> None:
        super().__init__(message)
        self.error = error
        self.field = field
        self.reason = reason


def next_version(current: tuple[int, FieldDefinition] | None, defined: int, definition: FieldDefinition) -> int | None:
    """The version `definition` gets (1: a new field), or None when it is the current one already.

    `current` is the field's (version, definition), `defined` how many fields the record kind has.
    A field's type and whether it is personal are fixed once defined: a new meaning needs a new
    name, and a field turned personal would leave its earlier values readable in the events."""
    if current is None:
        if defined >= FIELDS_PER_RECORD_MAX:
            raise FieldRuleError(
                "too_many_fields",
                f"there are {FIELDS_PER_RECORD_MAX} fields already, the most there may be",
                "name",
                f"at most {FIELDS_PER_RECORD_MAX} fields",
            )
        return 1
    version, old = current
    if old.type != definition.type:
        raise FieldRuleError(
            "field_type_fixed",
            f"{definition.name} is a {old.type} field; a new type needs a new name",
            "type",
            f"fixed: {old.type}",
        )
    if old.personal != definition.personal:
        raise FieldRuleError(
            "field_personal_fixed",
            f"whether {definition.name} is personal is fixed; a new name is needed",
            "personal",
            f"fixed: {str(old.personal).lower()}",
        )
    return None if old == definition else version + 1


def same_value(a: Any, b: Any) -> bool:
    """Whether setting `b` over `a` changes nothing (True is not 1, 1 is not 1.0 here)."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class TagChange:
    added: list[str]
    removed: list[str]
    tags: list[str]  # the whole set after, sorted


class TagErrors(ValueError):
    """Tags that are not tags (422): every one, as {"field": "add.<n>", "reason"}."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
        self.errors = errors


def tag_change(current: Iterable[str], add: Sequence[str], remove: Sequence[str]) -> TagChange:
    """Normalised tags added and removed (only those that change) and the whole set after.

    TagErrors for what is not a tag or is both added and removed; FieldRuleError too_many_tags
    when the set would hold more than TAGS_PER_RECORD_MAX."""
    errors: list[dict[str, str]] = []
    normal: dict[str, list[str]] = {"add": [], "remove": []}
    for side, tags in (("add", add), ("remove", remove)):
        for n, tag in enumerate(tags):
            try:
                normal[side].append(normalise_tag(tag))
            except ValueError as exc:
                errors.append({"field": f"{side}.{n}", "reason": str(exc)})
    both = sorted(set(normal["add"]) & set(normal["remove"]))
    errors += [{"field": "remove", "reason": f"{tag} is also added"} for tag in both]
    if errors:
        raise TagErrors(errors)
    before = set(current)
    after = (before | set(normal["add"])) - set(normal["remove"])
    if len(after) > TAGS_PER_RECORD_MAX and after != before:
        raise FieldRuleError(
            "too_many_tags",
            f"at most {TAGS_PER_RECORD_MAX} tags; remove some first",
            "add",
            f"at most {TAGS_PER_RECORD_MAX} tags",
        )
    return TagChange(sorted(after - before), sorted(before - after), sorted(after))


def normalise_tag(tag: str) -> str:
    """Lower case, trimmed, inner whitespace as "-"; ValueError if it is not a tag after that."""
    if not isinstance(tag, str):
        raise ValueError("a tag is a string")
    normal = re.sub(r"\s+", "-", tag.strip().lower())
    if not TAG_PATTERN.match(normal):
        raise ValueError(f"a tag is 1 to {TAG_MAX} of a-z 0-9 _ . : - (starting with a letter or digit)")
    return normal


# --- events ------------------------------------------------------------------------------------

FIELD_SUBJECT_PREFIX = "field:"  # servicekit.timeline keeps these on no customer's timeline


def field_subject(record: Record, name: str) -> str:
    return f"{FIELD_SUBJECT_PREFIX}{record}:{name}"


class FieldDefined(EventData):
    """A field was defined or redefined (subject `field:<record>:<name>`, on no timeline)."""

    record: Record
    definition: FieldDefinition
    version: int = Field(ge=1, description="1 for a new field, one more for each redefinition.")
    defined_by: str = Field(min_length=1, max_length=64, description="The key id of the admin.")


class FieldsSetData(SealedData):
    """Common part of crm.case.fields_set.v1 and crm.customer.fields_set.v1."""

    values: dict[str, FieldValue | None] = Field(
        default_factory=dict, description="Non-personal fields set (null: cleared), by name."
    )
    personal: dict[str, str | None] = Field(
        default_factory=dict,
        description='Personal fields set, each value as JSON text (null: cleared); sealed ("[sealed]" in place).',
    )
    changed: list[str] = Field(description="Names of the fields this event set or cleared.")
    set_by: str = Field(min_length=1, max_length=64, description="The key id that set them.")


class TagsChangedData(EventData):
    """Common part of crm.case.tags_changed.v1 and crm.customer.tags_changed.v1."""

    added: list[str] = Field(description="Tags added (normalised).")
    removed: list[str] = Field(description="Tags removed (normalised).")
    tags: list[str] = Field(description="The whole set after the change, sorted.")
    changed_by: str = Field(min_length=1, max_length=64, description="The key id that changed them.")


# The sealed paths of a fields_set event: every personal value.
FIELDS_SET_PERSONAL: tuple[str, ...] = ("personal.**",)


class CaseFieldsSet(CaseEvent, FieldsSetData):
    type: CaseType = Field(description="The case's type, so reports group without a lookup.")


class CaseTagsChanged(CaseEvent, TagsChangedData):
    pass


class CustomerFieldsSet(FieldsSetData):
    customer_id: str = Field(min_length=1, max_length=64)


class CustomerTagsChanged(TagsChangedData):
    customer_id: str = Field(min_length=1, max_length=64)


# case's (on crm.case.v1) and intake's (on crm.intake.v1) field and tag events; import these names.
CASE_FIELD_DEFINED = "crm.case.field_defined.v1"
CASE_FIELDS_SET = "crm.case.fields_set.v1"
CASE_TAGS_CHANGED = "crm.case.tags_changed.v1"
CUSTOMER_FIELD_DEFINED = "crm.customer.field_defined.v1"
CUSTOMER_FIELDS_SET = "crm.customer.fields_set.v1"
CUSTOMER_TAGS_CHANGED = "crm.customer.tags_changed.v1"

PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    CASE_FIELDS_SET: FIELDS_SET_PERSONAL,
    CUSTOMER_FIELDS_SET: FIELDS_SET_PERSONAL,
}

EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        CASE_FIELD_DEFINED,
        topics.CASE,
        FieldDefined,
        "A case field was defined or redefined by an admin (subject field:case:<name>; on no timeline).",
    ),
    EventType(CASE_FIELDS_SET, topics.CASE, CaseFieldsSet, "Typed fields of a case were set or cleared."),
    EventType(CASE_TAGS_CHANGED, topics.CASE, CaseTagsChanged, "Tags were added to or removed from a case."),
    EventType(
        CUSTOMER_FIELD_DEFINED,
        topics.INTAKE,
        FieldDefined,
        "A customer field was defined or redefined by an admin (subject field:customer:<name>; on no timeline).",
    ),
    EventType(CUSTOMER_FIELDS_SET, topics.INTAKE, CustomerFieldsSet, "Typed fields of a customer were set or cleared."),
    EventType(
        CUSTOMER_TAGS_CHANGED, topics.INTAKE, CustomerTagsChanged, "Tags were added to or removed from a customer."
    ),
)
