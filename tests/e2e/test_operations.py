"""Operations end to end: poison messages on every topic, the dead-letter tools, and replay."""

import asyncio
import os
import random
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from eventkit.devstack import ROOT, Stack
from eventkit.envelope import new_event, to_kafka

from contracts.topics import ALL_EVENT_TOPICS
from tests.conftest import api_client
from tests.e2e.conftest import Accepted, digests, interaction, metric_total, post_all, wait_converged
from tests.e2e.test_timeline_sync import workload

pytestmark = pytest.mark.e2e
TP = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


def cli_env(stack: Stack) -> dict[str, str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap, "PYTHONPATH": f"{ROOT / 'services'}:{ROOT}"}
    for name, svc in stack.services.items():
        env[f"CRM_{name.upper()}_DATABASE_URL"] = stack.postgres.dsn(f"crm_{name}")
        env[f"CRM_{name.upper()}_URL"] = svc.url
    return env


def crm(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventkit.cli", *args], env=cli_env(stack), capture_output=True, text=True, timeout=120
    )


def dead_letter_counts(metrics: str, reason: str, service: str) -> float:
    """The service's own consumer's count (analytics' KPI stream counts as "analytics-kpi")."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("crm_events_deadlettered_total{")
        and f'reason="{reason}"' in line
        and f'service="{service}"' in line
    )


async def test_poison_on_every_topic_is_parked_and_consumers_go_on(stack: Stack) -> None:
    async with api_client(timeout=10) as client:
        before = {n: (await client.get(f"{s.url}/metrics")).text for n, s in stack.services.items()}
        producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all", enable_idempotence=False)
        await producer.start()
        try:
            for topic in ALL_EVENT_TOPICS:
                await producer.send_and_wait(topic, b"\x00\xffgarbage", key=b"poison")
                key, value, headers = to_kafka(
                    new_event("crm.from.the.future.v7", "poison", {"x": 1}, "/elsewhere", TP)
                )
                await producer.send_and_wait(topic, value, key=key, headers=headers)
        finally:
            await producer.stop()

        # the consumers went on: a new interaction still reaches every timeline
        email = f"after-poison-{uuid.uuid4().hex[:8]}@example.com"
        accepted = Accepted()
        await post_all(stack.services["intake"].url, [interaction(email, random.Random(5))], accepted)
        await wait_converged(stack, accepted)

        for name, svc in stack.services.items():
            after = (await client.get(f"{svc.url}/metrics")).text
            for reason in ("unknown_type", "not_cloudevent"):  # one of each on each of the four topics
                assert dead_letter_counts(after, reason, name) - dead_letter_counts(before[name], reason, name) == 4

    listing = crm(stack, "deadletters", "analytics", "--limit", "500")
    assert listing.returncode == 0, listing.stderr
    assert "unknown_type" in listing.stdout and "crm.from.the.future.v7" in listing.stdout


async def test_redrive_puts_parked_messages_back(stack: Stack) -> None:
    async with api_client(timeout=10) as client:
        url = stack.services["case"].url
        before = metric_total((await client.get(f"{url}/metrics")).text, "crm_events_deadlettered_total")
        redriven = crm(stack, "redrive", "case")
        assert redriven.returncode == 0, redriven.stderr
        count = int(redriven.stdout.split()[1])
        assert count > 0
        # still poison, so parked again: proof they went back on their topic and were read again
        for _ in range(100):
            now = metric_total((await client.get(f"{url}/metrics")).text, "crm_events_deadlettered_total")
            if now - before >= count:
                break
            await asyncio.sleep(0.1)
        assert now - before >= count
    again = crm(stack, "redrive", "case")
    assert "redrove" in again.stdout  # the ones already redriven are not sent twice
    listing = crm(stack, "deadletters", "case", "--limit", "1000")
    assert "redriven" in listing.stdout


async def test_replay_rebuilds_the_same_timeline(stack: Stack) -> None:
    accepted = Accepted()
    await post_all(stack.services["intake"].url, workload("replay", 10, 100, seed=9), accepted)
    await wait_converged(stack, accepted)
    async with api_client(timeout=10) as client:
        old = {c: (await digests(stack, c, client))["notification"] for c in accepted.by_customer}

        result = crm(stack, "replay", "notification")
        assert result.returncode == 0, result.stderr
        assert "100.0%" in result.stderr and "events/s" in result.stderr

        new = {c: (await digests(stack, c, client))["notification"] for c in accepted.by_customer}
    assert new == old
    assert all(count == 11 for count, _ in new.values())


def test_status_lists_every_service(stack: Stack) -> None:
    result = crm(stack, "status")
    assert result.returncode == 0, result.stdout
    for name in stack.services:
        assert name in result.stdout
    assert "down" not in result.stdout
