"""Every published event carries CloudEvents `dataschema`: the `$id` of its type's JSON Schema.

The relay is built as the services build it (servicekit.app: `dataschema=schema_id`), and the
events go through the real store, outbox and broker."""

import json
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from eventkit.envelope import from_kafka, new_event, to_kafka
from eventkit.eventstore import Append, EventStore
from eventkit.outbox import OutboxRelay

from contracts.registry import REGISTRY, schema_id
from tests.conftest import make_topic, read_from_start, unique_topic

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


async def test_every_event_type_is_published_with_its_schema_id(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    appends = [
        Append(f"s-{name}", None, [new_event(name, f"c-{i}", {"n": i}, "/crm/test", TP)], topic)
        for i, name in enumerate(REGISTRY)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await EventStore("test").append(conn, appends)
    relay = OutboxRelay("unused", producer, "test", dataschema=schema_id)
    async with pool.acquire() as conn:
        while await relay.publish_pending(conn):
            pass
    records = await read_from_start(bootstrap, topic, 30, enough=lambda got: len(got) >= len(REGISTRY))
    published = {e.type: e.dataschema for e in (from_kafka(r.key, r.value, r.headers) for r in records)}
    expected = {name: json.loads((SCHEMAS / f"{name}.json").read_text())["$id"] for name in REGISTRY}
    assert published == expected


def test_events_without_a_dataschema_still_decode() -> None:
    """Events published before `dataschema` existed have no ce_dataschema header."""
    key, value, headers = to_kafka(new_event("crm.consent.changed.v1", "c-1", {"n": 1}, "/crm/test", TP))
    assert not any(name == "ce_dataschema" for name, _ in headers)
    assert from_kafka(key, value, headers).dataschema == ""


def test_a_type_that_is_not_registered_has_no_schema_id() -> None:
    assert schema_id("crm.nothing.v1") == ""
