"""Every event type of every producing domain: type name -> topic and payload model.

Each domain module lists its own types (intake in events.py); this module only gathers them.
"""

from contracts.analytics import EVENT_TYPES as ANALYTICS_EVENT_TYPES
from contracts.case import EVENT_TYPES as CASE_EVENT_TYPES
from contracts.events import INTAKE_EVENT_TYPES, EventType
from contracts.fields import EVENT_TYPES as FIELD_EVENT_TYPES
from contracts.notification import EVENT_TYPES as NOTIFICATION_EVENT_TYPES
from contracts.security import EVENT_TYPES as SECURITY_EVENT_TYPES

REGISTRY: dict[str, EventType] = {
    t.name: t
    for t in (
        *INTAKE_EVENT_TYPES,
        *CASE_EVENT_TYPES,
        *ANALYTICS_EVENT_TYPES,
        *NOTIFICATION_EVENT_TYPES,
        *SECURITY_EVENT_TYPES,
        *FIELD_EVENT_TYPES,
    )
}


# Where a type's JSON Schema says it lives (its `$id`); events carry it as CloudEvents `dataschema`.
SCHEMA_ID_BASE = "https://crm.example/schemas/"


def schema_id(name: str) -> str:
    """The `$id` of the type's schema (contracts/schemas/<name>.json); "" for a type not registered."""
    return f"{SCHEMA_ID_BASE}{name}.json" if name in REGISTRY else ""


def event_type(name: str) -> EventType:
    """The registered type, or KeyError for a type this version of the contract does not know."""
    return REGISTRY[name]
