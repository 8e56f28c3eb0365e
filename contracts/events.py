"""Payload models of every event type (the CloudEvents `data`), and the registry.

Each model is the single source of its JSON Schema in contracts/schemas/ (see generate.py).
Consumers ignore unknown fields, so adding an optional field is a compatible change;
removing a field, changing its type or adding an enum value needs a new type version.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from contracts import topics

Channel = Literal["web", "chat", "email", "phone", "sms", "social", "kiosk", "in_person", "survey"]
CHANNELS: tuple[str, ...] = get_args(Channel)
Direction = Literal["inbound", "outbound"]
InteractionKind = Literal[
    "message", "call", "visit", "purchase", "complaint", "request", "survey_response", "note", "other"
]
IdentifierKind = Literal["email", "phone", "external"]
ConsentPurpose = Literal["marketing", "service", "third_party_sharing"]


class EventData(BaseModel):
    model_config = ConfigDict(frozen=True)


class Identifier(BaseModel):
    """A way to recognise a customer: a normalised email, an E.164 phone, or a channel's own id."""

    model_config = ConfigDict(frozen=True)
    kind: IdentifierKind
    value: str = Field(min_length=1, max_length=320)
    channel: Channel | None = Field(default=None, description="Set for external ids: whose id it is.")


class CustomerCreated(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    identifiers: list[Identifier]


class InteractionRecorded(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    channel: Channel
    direction: Direction
    kind: InteractionKind
    occurred_at: datetime = Field(description="When it happened at the channel (RFC 3339).")
    content: str | None = Field(default=None, description="Message text or summary; personal data.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class CustomerMerged(EventData):
    survivor_id: str = Field(min_length=1, max_length=64)
    merged_id: str = Field(min_length=1, max_length=64)
    linked_by: Identifier = Field(description="The identifier found on both customers.")
    reason: str


class ConsentChanged(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    purpose: ConsentPurpose
    channel: Channel | None = Field(default=None, description="None means every channel.")
    granted: bool


@dataclass(frozen=True)
class EventType:
    name: str
    topic: str
    model: type[EventData]
    summary: str


REGISTRY: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType("crm.customer.created.v1", topics.INTAKE, CustomerCreated, "A customer became known."),
        EventType(
            "crm.interaction.recorded.v1",
            topics.INTAKE,
            InteractionRecorded,
            "A contact on any channel, inbound or outbound.",
        ),
        EventType(
            "crm.customer.merged.v1",
            topics.INTAKE,
            CustomerMerged,
            "Two customer records turned out to be one person; the merged id now points to the survivor.",
        ),
        EventType(
            "crm.consent.changed.v1", topics.INTAKE, ConsentChanged, "Consent for a purpose and channel."
        ),
    )
}


def event_type(name: str) -> EventType:
    """The registered type, or KeyError for a type this version of the contract does not know."""
    return REGISTRY[name]
