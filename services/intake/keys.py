"""API keys are events (crm.auth.*): intake signs and stores them, and every service, intake too,
learns the key's hash and scopes from the topic (servicekit.auth.KeyProjection)."""

from typing import Any

import asyncpg
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, EventStore
from eventkit.signing import EventSigner
from eventkit.telemetry import current_traceparent
from servicekit.auth import hash_key, new_key

from contracts.security import KEY_CREATED, KEY_REVOKED, KeyCreated, KeyRevoked
from contracts.topics import INTAKE
from intake.settings import IntakeSettings


class KeyNotFound(Exception):
    pass


class KeyRevokedAlready(Exception):
    pass


class SigningKeyMissing(Exception):
    """intake has no key to sign with (refused at start-up; checked again in case)."""


async def create_key(
    pool: asyncpg.Pool, store: EventStore, settings: IntakeSettings, name: str, scopes: list[str]
) -> dict[str, Any]:
    """A new key; the key itself is in this answer only (services keep its SHA-256)."""
    key_id, key = new_key()
    data = KeyCreated(key_id=key_id, name=name, scopes=sorted(set(scopes)), key_sha256=hash_key(key))
    event = _signed(settings, new_event(KEY_CREATED, f"key:{key_id}", _unsigned(data), settings.source,
                                        current_traceparent()))  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [Append(_stream(key_id), 0, [event], INTAKE)])
    return {"key_id": key_id, "key": key, "name": name, "scopes": data.scopes, "event_id": event.id}


async def revoke_key(pool: asyncpg.Pool, store: EventStore, settings: IntakeSettings, key_id: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        known = len(await store.load(conn, _stream(key_id)))
        if known == 0:
            raise KeyNotFound(key_id)
        if known > 1:
            raise KeyRevokedAlready(key_id)
        data = _unsigned(KeyRevoked(key_id=key_id))
        event = _signed(settings, new_event(KEY_REVOKED, f"key:{key_id}", data, settings.source, current_traceparent()))
        # Expected version 1: of two revocations racing, the second gets ConcurrencyError (409).
        await store.append(conn, [Append(_stream(key_id), 1, [event], INTAKE)])
    return {"key_id": key_id, "revoked": True, "event_id": event.id}


def _stream(key_id: str) -> str:
    return f"key-{key_id}"


def _unsigned(data: KeyCreated | KeyRevoked) -> dict[str, Any]:
    return data.model_dump(mode="json", exclude={"signature", "signing_key_id"})


def _signed(settings: IntakeSettings, event: Envelope) -> Envelope:
    """Signed with intake's signing key, so that the other services trust it (docs/product.md §14)."""
    if not settings.auth_event_signing_key or not settings.auth_event_signing_key_id:
        raise SigningKeyMissing()
    return EventSigner(settings.auth_event_signing_key_id, settings.auth_event_signing_key).sign(event)
