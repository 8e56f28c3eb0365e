"""Signed events (docs/product.md §14): what grants access is applied only with a signature that verifies."""

import hashlib
import json
from dataclasses import replace

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from eventkit.acceptance import Acceptance
from eventkit.consumer import BatchApplier
from eventkit.envelope import DecodeError, Envelope, from_kafka, new_event, to_kafka
from eventkit.signing import EventSigner, EventVerifier, generate_key_pair, public_key_of, signed_bytes
from eventkit.signing import main as signing_main
from prometheus_client import REGISTRY
from servicekit.auth import KeyProjection

from contracts.security import KEY_CREATED, KEY_REVOKED, SIGNED_TYPES
from contracts.topics import DEADLETTER
from tests.conftest import SCHEMAS, topic_and_dead_letters
from tests.plumbing.test_consumer import fetch, interaction, send

TP = "00-" + "5" * 32 + "-" + "6" * 16 + "-01"
PRIVATE, PUBLIC = generate_key_pair()
OTHER_PRIVATE, OTHER_PUBLIC = generate_key_pair()


def key_created(key_id: str = "k1", scopes: tuple[str, ...] = ("agent",)) -> Envelope:
    data = {
        "key_id": key_id,
        "name": "n",
        "scopes": list(scopes),
        "key_sha256": hashlib.sha256(key_id.encode()).hexdigest(),
    }
    return new_event(KEY_CREATED, f"key:{key_id}", data, "/crm/intake", TP)


def through_kafka(event: Envelope) -> Envelope:
    return from_kafka(*to_kafka(event))


def refusal(verifier: EventVerifier, event: Envelope) -> str:
    with pytest.raises(DecodeError) as caught:
        verifier(event)
    return caught.value.reason


def test_a_signed_event_verifies_after_the_trip_through_kafka() -> None:
    signed = EventSigner("2026-12", PRIVATE).sign(key_created())
    assert signed.data["signing_key_id"] == "2026-12"
    EventVerifier({"2026-12": PUBLIC}, SIGNED_TYPES)(through_kafka(signed))


def test_unsigned_unknown_key_wrong_key_and_tampered_events_are_refused() -> None:
    verifier = EventVerifier({"a": PUBLIC}, SIGNED_TYPES)
    assert refusal(verifier, key_created()) == "unsigned"
    assert refusal(verifier, EventSigner("b", OTHER_PRIVATE).sign(key_created())) == "unknown_signing_key"
    assert refusal(verifier, EventSigner("a", OTHER_PRIVATE).sign(key_created())) == "bad_signature"
    signed = EventSigner("a", PRIVATE).sign(key_created())
    for tampered in (
        replace(signed, data={**signed.data, "scopes": ["admin"]}),
        replace(signed, data={**signed.data, "key_sha256": "0" * 64}),
        replace(signed, id="00000000-0000-4000-8000-000000000000"),
        replace(signed, type=KEY_REVOKED),
        replace(signed, data={**signed.data, "signature": "not base64 !"}),
    ):
        assert refusal(verifier, tampered) == "bad_signature"


def test_rotation_trusts_every_listed_key_and_other_types_pass_unsigned() -> None:
    verifier = EventVerifier({"old": PUBLIC, "new": OTHER_PUBLIC}, SIGNED_TYPES)
    verifier(EventSigner("old", PRIVATE).sign(key_created()))
    verifier(EventSigner("new", OTHER_PRIVATE).sign(key_created()))
    verifier(interaction("c", 1))  # not a type that grants access: no signature needed


def test_the_signature_covers_a_canonical_encoding_without_itself() -> None:
    event = key_created()
    signed = EventSigner("a", PRIVATE).sign(event)
    assert signed_bytes(signed) == signed_bytes(event)
    assert b'"scopes":["agent"]' in signed_bytes(event)
    assert public_key_of(PRIVATE) == PUBLIC
    with pytest.raises(ValueError):
        EventVerifier({"a": "short"}, SIGNED_TYPES)


async def test_the_consumer_dead_letters_a_forged_key_and_applies_a_signed_one(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic = await topic_and_dead_letters(bootstrap)
    forged = key_created("forged", ("admin",))
    genuine = EventSigner("a", PRIVATE).sign(key_created("genuine"))
    await send(producer, topic, [forged, genuine])
    applier = BatchApplier(
        service="t-signed",
        pool=pool,
        producer=producer,
        subscribers=[KeyProjection()],
        acceptance=Acceptance(SCHEMAS, checks=[EventVerifier({"a": PUBLIC}, SIGNED_TYPES)]),
        deadletter_topic=DEADLETTER,
    )
    await applier.handle(await fetch(bootstrap, topic, 2))

    async with pool.acquire() as conn:
        keys = [r["key_id"] for r in await conn.fetch("SELECT key_id FROM api_keys")]
        parked = await conn.fetch("SELECT event_id, event_type, reason FROM dead_letters")
    assert keys == ["genuine"]
    assert [(r["event_id"], r["event_type"], r["reason"]) for r in parked] == [(forged.id, KEY_CREATED, "unsigned")]
    labels = {"service": "t-signed", "topic": topic, "reason": "unsigned"}
    assert REGISTRY.get_sample_value("crm_events_deadlettered_total", labels) == 1


def test_the_key_pair_command_prints_settings_that_fit_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert signing_main(["--key-id", "2027-01", "--prefix", "CRM_"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["CRM_AUTH_EVENT_SIGNING_KEY_ID"] == "2027-01"
    public_keys = json.loads(lines["CRM_AUTH_EVENT_PUBLIC_KEYS"])
    assert public_keys == {"2027-01": public_key_of(lines["CRM_AUTH_EVENT_SIGNING_KEY"])}
