"""The subscriber kit on the real stack: a real event read from the topic with aiokafka, decoded
with typed data, unsealed with a key of scope `keys` (refused for a key without it), and read as
"[erased]" once the customer is erased and the cached data key has expired."""

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from crm_client import event_types
from crm_client.events import Event, decode
from crm_client.unseal import ERASED, Unsealer, UnsealError
from crmtools.devstack import Stack

from contracts.topics import INTAKE
from tests.client.conftest import CLIENT_DIR
from tests.conftest import api_client, eventually, running_stack
from tests.e2e.helpers import make_key, wait_applied

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # intake alone: it produces the events, holds the data keys and erases.
    with running_stack(tmp_path_factory.mktemp("subscriber-stack"), {}, services=["intake"]) as s:
        yield s


class Topic:
    """A subscriber of its own consumer group on crm.intake.v1, from the earliest offset."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.seen: list[Event] = []

    async def find(self, what: str, match: Any) -> Event:
        async def probe() -> Event | None:
            for records in (await self.consumer.getmany(timeout_ms=500)).values():
                self.seen.extend(decode(r.key, r.value, r.headers) for r in records)
            return next((e for e in self.seen if match(e)), None)

        return await eventually(probe, timeout_s=60, what=what)


@pytest.fixture
async def topic(stack: Stack) -> AsyncIterator[Topic]:
    consumer = AIOKafkaConsumer(
        INTAKE,
        bootstrap_servers=stack.broker.bootstrap,
        group_id=f"subscriber-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        yield Topic(consumer)
    finally:
        await consumer.stop()


class Clock:
    """The unsealer's cache clock, moved on by hand: no waiting for the cache to expire."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_subscriber_decodes_unseals_and_sees_erasure(stack: Stack, topic: Topic) -> None:
    intake = stack.services["intake"].url
    tag = uuid.uuid4().hex[:10]
    email, content = f"wren.{tag}@example.com", f"My router {tag} is broken"
    body = {
        "customer": {"email": email},
        "channel": "chat",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": datetime(2026, 5, 1, 9, 30, tzinfo=UTC).isoformat(),
        "content": content,
        "metadata": {"callback": {"notes": [f"after six {tag}"]}, "score": 4},
    }
    reader = await make_key(stack, f"subscriber-{tag}", ["keys"], readers=["intake"])
    other = await make_key(stack, f"front-end-{tag}", ["channel:web"], readers=["intake"])
    async with api_client(timeout=20) as client:
        r = await client.post(f"{intake}/v1/interactions", json=body)
        assert r.status_code == 202, r.text
        accepted = r.json()
    customer = accepted["customer_id"]

    event = await topic.find("the interaction on the topic", lambda e: e.id == accepted["event_id"])
    # Decoded: CloudEvents attributes, the schema's $id, typed data with the personal fields sealed.
    assert (event.type, event.subject, event.source) == ("crm.interaction.recorded.v1", customer, "/crm/intake")
    assert event.dataschema == "https://crm.example/schemas/crm.interaction.recorded.v1.json"
    assert event.traceparent
    assert isinstance(event.data, event_types.InteractionRecorded)
    assert event.data.content == "[sealed]"
    assert event.data.metadata == {"callback": {"notes": ["[sealed]"]}, "score": 4}
    assert event.sealed
    created = await topic.find(
        "the customer's creation", lambda e: e.type == "crm.customer.created.v1" and e.subject == customer
    )
    assert isinstance(created.data, event_types.CustomerCreated)
    assert created.data.identifiers[0].value == "[sealed]"

    clock = Clock()
    unsealer = Unsealer(intake, reader["key"], key_cache_seconds=60, clock=clock)
    long_lived = Unsealer(intake, reader["key"], key_cache_seconds=3600)
    try:
        opened = await unsealer.unseal_async(event)
        assert isinstance(opened.data, event_types.InteractionRecorded)
        assert opened.data.content == content
        assert opened.data.metadata == {"callback": {"notes": [f"after six {tag}"]}, "score": 4}
        assert not opened.sealed and opened.id == event.id
        # The synchronous twin, on its own client, opens the same.
        opened_created = await asyncio.to_thread(unsealer.unseal, created)
        assert isinstance(opened_created.data, event_types.CustomerCreated)
        assert opened_created.data.identifiers[0].value == email
        assert content_of(await long_lived.unseal_async(event)) == content

        # A key without scope keys gets no data key: a clear error, never fields shown as erased.
        async with Unsealer(intake, other["key"]) as refused:
            with pytest.raises(UnsealError) as info:
                await refused.unseal_async(event)
        assert (info.value.status, info.value.error) == (403, "forbidden")

        async with api_client(timeout=20) as client:
            r = await client.post(f"{intake}/v1/customers/{customer}/erasure")
            assert r.status_code == 202, r.text
            erased_event_id = r.json()["event_id"]
            await wait_applied(client, stack, customer, erased_event_id, readers=["intake"])

        # Within the cache's time the key is still known; once it expires, the lookup says erased.
        assert content_of(await unsealer.unseal_async(event)) == content
        clock.now += 61
        after = await unsealer.unseal_async(event)
        assert isinstance(after.data, event_types.InteractionRecorded)
        assert after.data.content == ERASED
        assert after.data.metadata == {"callback": {"notes": [ERASED]}, "score": 4}
        after_created = await asyncio.to_thread(unsealer.unseal, created)
        assert isinstance(after_created.data, event_types.CustomerCreated)
        assert after_created.data.identifiers[0].value == ERASED

        # A subscriber that reads the erasure event forgets the key at once, not at expiry.
        assert content_of(await long_lived.unseal_async(event)) == content  # cached from before
        erasure = await topic.find("the erasure on the topic", lambda e: e.id == erased_event_id)
        assert isinstance(erasure.data, event_types.CustomerErased)
        assert (await long_lived.unseal_async(erasure)) == erasure  # nothing sealed in it
        assert content_of(await long_lived.unseal_async(event)) == ERASED
    finally:
        await unsealer.aclose()
        await long_lived.aclose()


def content_of(event: Event) -> str | None:
    assert isinstance(event.data, event_types.InteractionRecorded)
    return event.data.content


EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "subscriber.py"


async def test_the_example_subscriber_prints_opened_events_and_commits(stack: Stack) -> None:
    intake = stack.services["intake"].url
    tag = uuid.uuid4().hex[:10]
    content = f"Where is parcel {tag}?"
    reader = await make_key(stack, f"example-{tag}", ["keys"], readers=["intake"])
    async with api_client(timeout=20) as client:
        r = await client.post(
            f"{intake}/v1/interactions",
            json={
                "customer": {"email": f"kite.{tag}@example.com"},
                "channel": "web",
                "direction": "inbound",
                "kind": "message",
                "occurred_at": datetime.now(UTC).isoformat(),
                "content": content,
            },
        )
        assert r.status_code == 202, r.text
    group = f"example-{tag}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([CLIENT_DIR, os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--bootstrap", stack.broker.bootstrap, "--intake", intake,
        "--api-key", reader["key"], "--group", group, "--topics", INTAKE,
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    printed: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(60):
            while printed is None:
                line = await proc.stdout.readline()
                assert line, "the example stopped before printing the interaction"
                if content in line.decode():
                    printed = json.loads(line)
        # It commits what it has printed: the group's offset moves on from the start.
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.broker.bootstrap, group_id=group)
        await consumer.start()
        try:

            async def committed() -> int | None:
                offsets = [await consumer.committed(TopicPartition(INTAKE, p)) or 0 for p in range(6)]
                return sum(offsets) or None

            assert await eventually(committed, what="the example's commit") > 0
        finally:
            await consumer.stop()
    finally:
        proc.terminate()
        await proc.wait()
    assert printed["type"] == "crm.interaction.recorded.v1"
    assert printed["data"]["content"] == content
