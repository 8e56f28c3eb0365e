"""API key events: created and revoked, so that every service knows every key.

They travel on crm.intake.v1 (intake manages keys), with subject `key:<key_id>`, and carry
only a SHA-256 of the key: a key is random (256 bits), so its hash does not reveal it.

They grant and withdraw access, so they are signed (docs/product.md §14): intake signs each with its
Ed25519 signing key (eventkit/signing.py says what the signature covers) and every service
applies only those that verify under its trusted public keys (AUTH_EVENT_PUBLIC_KEYS).
"""

from typing import Literal

from pydantic import Field

from contracts import topics
from contracts.events import CHANNELS, EventData, EventType

KEY_CREATED = "crm.auth.key_created.v1"
KEY_REVOKED = "crm.auth.key_revoked.v1"
# The events a service acts on for authorization: applied only when their signature verifies.
SIGNED_TYPES: frozenset[str] = frozenset({KEY_CREATED, KEY_REVOKED})
# identity:verify: the key's identifiers are verified, not claimed (docs/product.md §14, docs/identity-trust.md).
# supervisor: sets up agents (teams, capacity, skills) and anyone's status.
# campaigns: creates and steers campaigns (notification's /v1/campaigns), reads their results (analytics).
# channel:<channel> for every channel of contracts.events.Channel, and no other.
SCOPE_PATTERN = rf"^(agent|supervisor|ops|admin|keys|campaigns|identity:verify|channel:({'|'.join(CHANNELS)}))$"


class Signed(EventData):
    # Optional in the schema (events written before signing have neither), required by the
    # services that apply them: an event without them is refused.
    signature: str | None = Field(
        default=None, max_length=128, description="Ed25519 signature (base64url) by intake's signing key"
    )
    signing_key_id: str | None = Field(
        default=None, max_length=64, description="Which of intake's signing keys made the signature"
    )


class KeyCreated(Signed):
    key_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(
        min_length=1, description="agent, supervisor, ops, admin, keys, campaigns, identity:verify or channel:<channel>"
    )
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class KeyRevoked(Signed):
    key_id: str = Field(min_length=1, max_length=64)
    reason: Literal["revoked"] = "revoked"


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(KEY_CREATED, topics.INTAKE, KeyCreated, "An API key was created (its hash and scopes)."),
    EventType(KEY_REVOKED, topics.INTAKE, KeyRevoked, "An API key was revoked; every service refuses it."),
)
