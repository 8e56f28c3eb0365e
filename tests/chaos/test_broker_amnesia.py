"""The embedded broker keeps nothing on disk. When it restarts empty, every service notices that
it forgot acknowledged events and publishes its store again; nothing accepted is lost and the
repeats change nothing."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from eventkit.devstack import Stack
from eventkit.envelope import from_kafka

from contracts.topics import INTAKE
from tests.conftest import api_client
from tests.e2e.conftest import Accepted, metric_total, post_all, wait_converged
from tests.e2e.test_timeline_sync import assert_exact, workload

pytestmark = pytest.mark.e2e


async def ids_on_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> set[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    ids: set[str] = set()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(ids) < expected and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                ids.update(from_kafka(r.key, r.value, r.headers).id for r in records)
    finally:
        await consumer.stop()
    return ids


async def test_broker_restart_forgetting_everything_loses_nothing(chaos_stack: Stack) -> None:
    stack = chaos_stack
    intake = stack.services["intake"].url
    before = Accepted()
    await post_all(intake, workload("amnesia-a", 20, 200, seed=11), before)
    await wait_converged(stack, before)

    stack.broker.kill()  # SIGKILL: memory storage, so every topic, message and offset is gone
    stack.broker.start()

    after = Accepted()
    await post_all(intake, workload("amnesia-b", 20, 200, seed=12), after)  # intake never needs the broker to accept
    everything = Accepted()
    for acc in (before, after):
        for customer, ids in acc.by_customer.items():
            everything.by_customer[customer].extend(ids)
    await wait_converged(stack, everything, timeout_s=120)
    await assert_exact(stack, everything)

    # the new broker holds intake's whole store again, for any subscriber that starts now
    stored = {i for ids in everything.by_customer.values() for i in ids}
    on_topic = await ids_on_topic(stack.broker.bootstrap, INTAKE, len(stored))
    assert stored <= on_topic
    async with api_client() as client:
        metrics = (await client.get(f"{intake}/metrics")).text
    assert metric_total(metrics, "crm_broker_amnesia_total") >= 1
    assert metric_total(metrics, "crm_outbox_republished_total") >= len(
        {i for ids in before.by_customer.values() for i in ids}
    )
