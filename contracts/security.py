"""API key events: created and revoked, so that every service knows every key.

They travel on crm.intake.v1 (intake manages keys), with subject `key:<key_id>`, and carry
only a SHA-256 of the key: a key is random (256 bits), so its hash does not reveal it.
"""

from typing import Literal

from pydantic import Field

from contracts import topics
from contracts.events import EventData, EventType

KEY_CREATED = "crm.auth.key_created.v1"
KEY_REVOKED = "crm.auth.key_revoked.v1"
# identity:verify: the key's identifiers are verified, not claimed (SPEC §14, docs/identity-trust.md).
SCOPE_PATTERN = (
    r"^(agent|ops|admin|keys|identity:verify|channel:(web|chat|email|phone|sms|social|kiosk|in_person|survey))$"
)


class KeyCreated(EventData):
    key_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, description="agent, ops, admin, keys, identity:verify or channel:<channel>")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class KeyRevoked(EventData):
    key_id: str = Field(min_length=1, max_length=64)
    reason: Literal["revoked"] = "revoked"


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(KEY_CREATED, topics.INTAKE, KeyCreated, "An API key was created (its hash and scopes)."),
    EventType(KEY_REVOKED, topics.INTAKE, KeyRevoked, "An API key was revoked; every service refuses it."),
)
