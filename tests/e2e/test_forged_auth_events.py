"""Hostile input on the broker (docs/product.md §14): whoever can write to crm.intake.v1 cannot mint or
revoke an API key. Forged crm.auth.* events are dead-lettered with the reason by every service
that reads the topic, and the key they claim answers 401 everywhere."""

import hashlib
import json
import os
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from crmtools.devstack import Stack
from eventkit.envelope import Envelope, new_event, to_kafka
from eventkit.signing import EventSigner, generate_key_pair

from contracts.security import KEY_CREATED, KEY_REVOKED
from contracts.topics import INTAKE, PROJECTED_WHEN_STORED
from tests.conftest import api_client, eventually
from tests.e2e.helpers import make_key
from tests.e2e.test_operations import dead_letter_counts

pytestmark = pytest.mark.e2e
TP = "00-" + "3" * 32 + "-" + "4" * 16 + "-01"
# What each service must answer for an admin route of its own (case has no admin list route:
# a case read needs agent, which admin has).
ROUTES = {
    "intake": "/v1/admin/keys",
    "case": "/v1/cases",
    "notification": "/v1/notifications",
    "analytics": "/v1/kpis",
}
READERS = [name for name in ROUTES if PROJECTED_WHEN_STORED.get(name) != INTAKE]  # who consumes crm.intake.v1


def forged_key_event() -> tuple[str, Envelope]:
    """(the key, an unsigned crm.auth.key_created.v1 granting it admin)."""
    key_id = uuid.uuid4().hex[:12]
    key = f"crm_{key_id}_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    data = {
        "key_id": key_id,
        "name": "mallory",
        "scopes": ["admin"],
        "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
    }
    return key, new_event(KEY_CREATED, f"key:{key_id}", data, "/crm/intake", TP)


async def produce(stack: Stack, events: list[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for event in events:
            key, value, headers = to_kafka(event)
            await producer.send_and_wait(INTAKE, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def dead_letter_reasons(stack: Stack, event_ids: list[str]) -> dict[str, dict[str, str]] | None:
    """Per reading service, event id -> the reason it parked it with; None until all are parked."""
    out: dict[str, dict[str, str]] = {}
    for name in READERS:
        conn = await asyncpg.connect(stack.postgres.dsn(f"crm_{name}"))
        try:
            rows = await conn.fetch(
                "SELECT event_id, reason FROM dead_letters WHERE event_id = ANY($1::text[])", event_ids
            )
        finally:
            await conn.close()
        out[name] = {r["event_id"]: r["reason"] for r in rows}
        if len(out[name]) < len(event_ids):
            return None
    return out


async def status_everywhere(stack: Stack, key: str) -> dict[str, int]:
    async with api_client(key, timeout=10) as client:
        return {name: (await client.get(stack.services[name].url + path)).status_code for name, path in ROUTES.items()}


async def test_forged_key_events_are_refused_everywhere(stack: Stack) -> None:
    trusted_id = os.environ["AUTH_EVENT_SIGNING_KEY_ID"]
    attacker = generate_key_pair()[0]
    unsigned_key, unsigned = forged_key_event()
    wrong_key, wrong = forged_key_event()
    wrong = EventSigner(trusted_id, attacker).sign(wrong)  # a trusted key id, another private key
    unknown_key, unknown = forged_key_event()
    unknown = EventSigner("mallory", attacker).sign(unknown)  # a key id nobody trusts
    # A genuine signature (the trusted key) on an agent key, then its scopes raised to admin.
    tampered_key, tampered = forged_key_event()
    tampered = replace(tampered, data={**tampered.data, "scopes": ["agent"]})
    tampered = EventSigner(trusted_id, os.environ["AUTH_EVENT_SIGNING_KEY"]).sign(tampered)
    tampered = replace(tampered, data={**tampered.data, "scopes": ["admin"]})
    genuine = await make_key(stack, f"agent-{uuid.uuid4().hex[:6]}", ["agent"])
    # And a forged revocation of the genuine key.
    revocation = new_event(KEY_REVOKED, f"key:{genuine['key_id']}", {"key_id": genuine["key_id"]}, "/crm/intake", TP)
    forged = {"unsigned": unsigned, "bad_signature": wrong, "unknown_signing_key": unknown}
    forged |= {"tampered": tampered, "revocation": revocation}

    async with api_client(timeout=10) as client:
        before = {n: (await client.get(f"{stack.services[n].url}/metrics")).text for n in READERS}
    await produce(stack, list(forged.values()))

    ids = [e.id for e in forged.values()]
    parked = await eventually(lambda: dead_letter_reasons(stack, ids), 60, "the forged events dead-lettered")
    expected = {
        unsigned.id: "unsigned",
        wrong.id: "bad_signature",
        unknown.id: "unknown_signing_key",
        tampered.id: "bad_signature",
        revocation.id: "unsigned",
    }
    for name in READERS:
        assert parked[name] == expected, name

    for key in (unsigned_key, wrong_key, unknown_key, tampered_key):
        assert await status_everywhere(stack, key) == dict.fromkeys(ROUTES, 401)
    # The forged revocation changed nothing: the genuine key still reads timelines everywhere.
    async with api_client(genuine["key"], timeout=10) as client:
        for svc in stack.services.values():
            assert (await client.get(f"{svc.url}/v1/customers/nobody/timeline")).status_code == 200

    async with api_client(timeout=10) as client:
        for name in READERS:
            after = (await client.get(f"{stack.services[name].url}/metrics")).text
            for reason, n in (("unsigned", 2), ("bad_signature", 2), ("unknown_signing_key", 1)):
                assert dead_letter_counts(after, reason, name) - dead_letter_counts(before[name], reason, name) == n


async def test_signed_key_events_carry_the_signature(stack: Stack) -> None:
    """What intake publishes verifies under the trusted key (the others apply it: make_key waits)."""
    key = await make_key(stack, f"agent-{uuid.uuid4().hex[:6]}", ["agent"])
    async with api_client(key["key"], timeout=10) as client:
        for svc in stack.services.values():
            assert (await client.get(f"{svc.url}/v1/customers/nobody/timeline")).status_code == 200
    conn = await asyncpg.connect(stack.postgres.dsn("crm_intake"))
    try:
        text = await conn.fetchval("SELECT data::text FROM events WHERE event_id = $1::uuid", key["event_id"])
    finally:
        await conn.close()
    data: dict[str, Any] = json.loads(text)
    assert data["signing_key_id"] == os.environ["AUTH_EVENT_SIGNING_KEY_ID"]
    assert len(data["signature"]) == 86  # 64 bytes, base64url without padding
