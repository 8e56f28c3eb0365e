"""The shared vocabulary (channels, EventData, EventType) and intake's event payloads.

Each model is the single source of its JSON Schema in contracts/schemas/ (see generate.py).
Consumers ignore unknown fields, so adding an optional field is a compatible change;
removing a field, changing its type or adding an enum value needs a new type version.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from contracts import topics

# The one list of interaction channels: the channel:<channel> API key scopes (contracts.security)
# and analytics' per-channel gauges derive from it.
Channel = Literal["web", "chat", "email", "phone", "sms", "social", "kiosk", "in_person", "survey"]
CHANNELS: tuple[str, ...] = get_args(Channel)
Direction = Literal["inbound", "outbound"]
InteractionKind = Literal[
    "message", "call", "visit", "purchase", "complaint", "request", "survey_response", "note", "other"
]
IdentifierKind = Literal["email", "phone", "external"]
ConsentPurpose = Literal["marketing", "service", "third_party_sharing"]
# docs/product.md §14: identifiers a channel key gives are claims; a key with scope identity:verify (or admin)
# and an agent's confirmation make them verified. Absent (events from before trust existed): they
# were all trusted then, and are read as verified, so replays keep what was there.
Trust = Literal["claimed", "verified"]
TRUST_DESCRIPTION = (
    "claimed: given by a channel key, not proven; verified: by a key allowed to verify identities"
    " (identity:verify, admin) or confirmed by an agent. Absent in events from before trust: verified."
)


class EventData(BaseModel):
    model_config = ConfigDict(frozen=True)


class Sealed(BaseModel):
    """Personal fields encrypted under one customer's data key (SPEC §9).

    Each sealed field holds the marker "[sealed]" in its usual place; its ciphertext is here,
    under its dotted path ("content", "identifiers.0.value"). Only services that can fetch the
    customer's data key read it; once the customer is erased nobody can."""

    model_config = ConfigDict(frozen=True)
    key: str = Field(min_length=1, max_length=64, description="The customer id whose data key sealed the fields.")
    fields: dict[str, str] = Field(description="Dotted path -> AES-256-GCM token (v1.<base64url nonce+ciphertext>).")


class SealedData(EventData):
    sealed: Sealed | None = Field(default=None, description='Ciphertext of the fields marked "[sealed]".')


class Identifier(BaseModel):
    """A way to recognise a customer: a normalised email, an E.164 phone, or a channel's own id."""

    model_config = ConfigDict(frozen=True)
    kind: IdentifierKind
    value: str = Field(min_length=1, max_length=320)
    channel: Channel | None = Field(default=None, description="Set for external ids: whose id it is.")


class CustomerCreated(SealedData):
    customer_id: str = Field(min_length=1, max_length=64)
    identifiers: list[Identifier]
    trust: Trust | None = Field(default=None, description=TRUST_DESCRIPTION)
    inbound: bool | None = Field(
        default=None,
        description="Created by an inbound interaction naming a single address (email or phone): the"
        " customer used it themselves, so messages may answer it even while it is claimed.",
    )


class InteractionRecorded(SealedData):
    customer_id: str = Field(min_length=1, max_length=64)
    channel: Channel
    direction: Direction
    kind: InteractionKind
    occurred_at: datetime = Field(description="When it happened at the channel (RFC 3339).")
    content: str | None = Field(default=None, description="Message text or summary; personal data: sealed.")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description='Free JSON from the channel. Every string in it is personal data: sealed ("[sealed]" in'
        " place), except the top-level keys case_type, case_id, survey, score, amount and campaign_id.",
    )


class CustomerMerged(SealedData):
    survivor_id: str = Field(min_length=1, max_length=64)
    merged_id: str = Field(min_length=1, max_length=64)
    linked_by: Identifier = Field(
        description='The identifier found on both customers; for a manual merge (reason "manual"), one'
        " identifier of the merged customer, for the record (docs/merge-and-unmerge.md)."
    )
    reason: str
    merged_by: str | None = Field(
        default=None, max_length=64, description="The key id of the agent who merged them by hand; absent otherwise."
    )


class ConsentChanged(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    purpose: ConsentPurpose
    channel: Channel | None = Field(default=None, description="None means every channel.")
    granted: bool
    merged_from: str | None = Field(
        default=None,
        max_length=64,
        description="Set when a merge carried this answer over from the merged customer (that id): an"
        " unmerge takes it back. Absent: the customer's own answer.",
    )


class ConsentKey(BaseModel):
    model_config = ConfigDict(frozen=True)
    purpose: ConsentPurpose
    channel: Channel | None = Field(default=None, description="None means every channel.")


class CustomerUnmerged(SealedData):
    """A merge undone by an agent: merged_id (and the ids merged into it) answer for themselves again."""

    survivor_id: str = Field(min_length=1, max_length=64)
    merged_id: str = Field(min_length=1, max_length=64)
    identifiers: list[Identifier] = Field(
        default_factory=list, description="The survivor's identifiers that go back to merged_id. Personal: sealed."
    )
    unmerged_by: str = Field(min_length=1, max_length=64, description="The key id of the agent who unmerged them.")
    reason: str | None = Field(default=None, max_length=500)
    consent_cleared: list[ConsentKey] = Field(
        default_factory=list,
        description="The survivor's consent entries only the merge had given it: no answer again (each"
        " other change of the survivor's consent is a crm.consent.changed.v1).",
    )


class IdentifiersAdded(SealedData):
    customer_id: str = Field(min_length=1, max_length=64)
    identifiers: list[Identifier] = Field(min_length=1)
    trust: Trust | None = Field(default=None, description=TRUST_DESCRIPTION)


class IdentifiersVerified(SealedData):
    customer_id: str = Field(min_length=1, max_length=64)
    identifiers: list[Identifier] = Field(min_length=1, description="Identifiers of the customer, claimed until now.")
    by: Literal["agent", "key"] = Field(
        description="agent: confirmed by an agent; key: named by a key allowed to verify identities."
    )


class MergeSuggested(SealedData):
    """On the timeline of both customers: identifiers claimed together belong to two customers."""

    suggestion_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64, description="Whose timeline this copy is on.")
    survivor_id: str = Field(min_length=1, max_length=64, description="Who would survive (the older record).")
    merged_id: str = Field(min_length=1, max_length=64)
    linked_by: Identifier = Field(description="The identifier that named the other customer.")
    reason: str


class MergeSuggestionDecided(EventData):
    """On the timeline of both customers: an agent accepted (the customers merge: crm.customer.merged.v1
    follows) or rejected the suggestion."""

    suggestion_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64, description="Whose timeline this copy is on.")
    survivor_id: str = Field(min_length=1, max_length=64)
    merged_id: str = Field(min_length=1, max_length=64)
    decision: Literal["accepted", "rejected"]
    decided_by: str = Field(min_length=1, max_length=64, description="The key id of the agent who decided.")


class QuietHours(BaseModel):
    """Local times in the customer's zone; start after end means the span crosses midnight."""

    model_config = ConfigDict(frozen=True)
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["22:00"])
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["07:00"])
    time_zone: str = Field(min_length=1, max_length=64, examples=["Europe/Berlin"])


class Preferences(BaseModel):
    model_config = ConfigDict(frozen=True)
    preferred_channel: Channel | None = None
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", examples=["de", "en-GB"])
    quiet_hours: QuietHours | None = None
    vip: bool = False
    region: str | None = Field(default=None, pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$", examples=["DE", "US-CA"])


class PreferencesChanged(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    preferences: Preferences = Field(description="The whole new set, not just the changes.")
    changed: list[str] = Field(description="Names of the fields that changed.")


class ProfileChanged(SealedData):
    customer_id: str = Field(min_length=1, max_length=64)
    name: str | None = Field(
        default=None, max_length=200, description="Display name, e.g. Ada Lovelace; None: no name. Personal: sealed."
    )
    changed: list[str] = Field(description="Names of the profile fields that changed.")


class CustomerErased(EventData):
    customer_id: str = Field(min_length=1, max_length=64)
    erased_ids: list[str] = Field(
        min_length=1, description="The customer and every id merged into it: their data keys are destroyed."
    )


@dataclass(frozen=True)
class EventType:
    name: str
    topic: str
    model: type[EventData]
    summary: str


# Interaction metadata is free JSON from the channels, so any string in it may be personal and
# is sealed. The keys the services act on (case type, the case answered, survey name and score,
# purchase amount, the campaign answered) say what the interaction was, not who the person is:
# they stay readable for case and analytics.
METADATA_READABLE_KEYS: tuple[str, ...] = ("case_type", "case_id", "survey", "score", "amount", "campaign_id")

# intake's event types: import these names, never spell the strings elsewhere.
CUSTOMER_CREATED = "crm.customer.created.v1"
INTERACTION_RECORDED = "crm.interaction.recorded.v1"
CUSTOMER_MERGED = "crm.customer.merged.v1"
CUSTOMER_UNMERGED = "crm.customer.unmerged.v1"
CONSENT_CHANGED = "crm.consent.changed.v1"
IDENTIFIERS_ADDED = "crm.customer.identifiers_added.v1"
IDENTIFIERS_VERIFIED = "crm.customer.identifiers_verified.v1"
MERGE_SUGGESTED = "crm.customer.merge_suggested.v1"
MERGE_SUGGESTION_DECIDED = "crm.customer.merge_suggestion_decided.v1"
PREFERENCES_CHANGED = "crm.customer.preferences_changed.v1"
PROFILE_CHANGED = "crm.customer.profile_changed.v1"
CUSTOMER_ERASED = "crm.customer.erased.v1"

# The personal fields of each type (dotted paths, * for every list item, ** for every string at
# any depth below, ! for a path kept readable): sealed under the customer's data key by the
# producer, readable only while that key exists (docs/product.md §9).
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    CUSTOMER_CREATED: ("identifiers.*.value",),
    IDENTIFIERS_ADDED: ("identifiers.*.value",),
    CUSTOMER_MERGED: ("linked_by.value",),
    CUSTOMER_UNMERGED: ("identifiers.*.value",),
    IDENTIFIERS_VERIFIED: ("identifiers.*.value",),
    MERGE_SUGGESTED: ("linked_by.value",),
    INTERACTION_RECORDED: ("content", "metadata.**", *(f"!metadata.{k}" for k in METADATA_READABLE_KEYS)),
    PROFILE_CHANGED: ("name",),
}

INTAKE_EVENT_TYPES: tuple[EventType, ...] = (
    EventType(CUSTOMER_CREATED, topics.INTAKE, CustomerCreated, "A customer became known."),
    EventType(
        INTERACTION_RECORDED,
        topics.INTAKE,
        InteractionRecorded,
        "A contact on any channel, inbound or outbound.",
    ),
    EventType(
        CUSTOMER_MERGED,
        topics.INTAKE,
        CustomerMerged,
        "Two customer records turned out to be one person; the merged id now points to the survivor.",
    ),
    EventType(
        CUSTOMER_UNMERGED,
        topics.INTAKE,
        CustomerUnmerged,
        "An agent undid a merge: the merged id answers for itself again, with the identifiers given back.",
    ),
    EventType(CONSENT_CHANGED, topics.INTAKE, ConsentChanged, "Consent for a purpose and channel."),
    EventType(
        IDENTIFIERS_ADDED,
        topics.INTAKE,
        IdentifiersAdded,
        "A known customer was seen with identifiers not yet linked to them.",
    ),
    EventType(
        IDENTIFIERS_VERIFIED,
        topics.INTAKE,
        IdentifiersVerified,
        "Claimed identifiers of a customer became verified (an agent confirmed them, or a verifying key named them).",
    ),
    EventType(
        MERGE_SUGGESTED,
        topics.INTAKE,
        MergeSuggested,
        "Claimed identifiers name two customers: an agent decides whether to merge them (one copy per customer).",
    ),
    EventType(
        MERGE_SUGGESTION_DECIDED,
        topics.INTAKE,
        MergeSuggestionDecided,
        "An agent accepted or rejected a merge suggestion (one copy per customer).",
    ),
    EventType(
        PREFERENCES_CHANGED,
        topics.INTAKE,
        PreferencesChanged,
        "Preferred channel, language, quiet hours, VIP flag or region changed.",
    ),
    EventType(
        PROFILE_CHANGED,
        topics.INTAKE,
        ProfileChanged,
        "The customer's profile (display name) changed; the whole new profile, not just the changes.",
    ),
    EventType(
        CUSTOMER_ERASED,
        topics.INTAKE,
        CustomerErased,
        "The customer's data keys were destroyed: their personal data reads as erased everywhere from now on.",
    ),
)
