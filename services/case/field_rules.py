"""Typed fields of cases, the pure part the case aggregate folds and checks (issue 29). No I/O.

The definitions of case fields are one stream (`field-case`): each event defines or redefines one
field. `Definitions` folds it; domain.change_status asks `missing_to_resolve` before "resolved".
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts import fields as f

Defs = Mapping[str, f.FieldDefinition] | None
STREAM = "field-case"  # not case-<id> nor agent-<id>: a case id is never "field-..." with that prefix


def fold_values(values: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Fold one fields_set event's values into `values` (null clears the field)."""
    for name, value in changes.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value


def missing_to_resolve(case_type: str, present: Mapping[str, Any], definitions: Defs) -> list[str]:
    """The fields required to resolve a case of `case_type` that have no value, sorted."""
    return sorted(
        name
        for name, d in (definitions or {}).items()
        if d.required_to_resolve and f.applies_to(d, case_type) and name not in present
    )


@dataclass(frozen=True)
class Defined:
    definition: f.FieldDefinition
    version: int
    defined_by: str
    defined_at: datetime


@dataclass
class Definitions:
    """The case fields as the definition events left them; `version` is the stream's."""

    version: int = 0
    current: dict[str, Defined] = field(default_factory=dict)

    @classmethod
    def from_events(cls, events: Iterable[tuple[str, Mapping[str, Any], datetime]]) -> "Definitions":
        state = cls()
        for type_, data, time in events:
            state.apply(type_, data, time)
        return state

    def apply(self, type_: str, data: Mapping[str, Any], time: datetime) -> None:
        self.version += 1
        if type_ == f.CASE_FIELD_DEFINED:
            definition = f.FieldDefinition.model_validate(data["definition"])
            self.current[definition.name] = Defined(definition, data["version"], data["defined_by"], time)

    def definitions(self) -> dict[str, f.FieldDefinition]:
        return {name: d.definition for name, d in self.current.items()}
