"""The wire contract between the four services and anyone subscribing to their topics.

Pure data: topic names, the payload model of every event type, and the registry tying a
type name to its topic and model. No I/O; services and outside tools import it alike.
"""

from contracts.events import (
    CHANNELS,
    REGISTRY,
    ConsentChanged,
    CustomerCreated,
    CustomerMerged,
    EventType,
    Identifier,
    IdentifiersAdded,
    InteractionRecorded,
    Preferences,
    PreferencesChanged,
    QuietHours,
    event_type,
)
from contracts.topics import ALL_EVENT_TOPICS, ANALYTICS, CASE, DEADLETTER, INTAKE, NOTIFICATION

__all__ = [
    "ALL_EVENT_TOPICS",
    "ANALYTICS",
    "CASE",
    "CHANNELS",
    "DEADLETTER",
    "INTAKE",
    "NOTIFICATION",
    "REGISTRY",
    "ConsentChanged",
    "CustomerCreated",
    "CustomerMerged",
    "EventType",
    "Identifier",
    "IdentifiersAdded",
    "InteractionRecorded",
    "Preferences",
    "PreferencesChanged",
    "QuietHours",
    "event_type",
]
