"""Operations end to end: poison messages on every topic, the dead-letter tools, and replay."""

import asyncio
import os
import random
import re
import subprocess
import sys
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from crmtools.cli import group_lags
from crmtools.devstack import ROOT, Stack
from eventkit.envelope import new_event, to_kafka
from eventkit.partition_ends import PartitionEnds
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import ALL_EVENT_TOPICS, CASE, INTAKE, PROJECTED_WHEN_STORED
from tests.conftest import api_client, eventually
from tests.e2e.conftest import Accepted, digests, interaction, post_all, wait_converged
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
        [sys.executable, "-m", "crmtools.cli", *args], env=cli_env(stack), capture_output=True, text=True, timeout=120
    )


def dead_letter_counts(metrics: str, reason: str, service: str) -> float:
    """The service's own consumer's count (analytics' KPI fold rides on it: no second service label)."""
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
            # one of each on each topic the service reads: all four, but its own where it projects
            # that as it stores it (intake: the poison on crm.intake.v1 is the others' to park)
            read = [t for t in ALL_EVENT_TOPICS if t != PROJECTED_WHEN_STORED.get(name)]
            for reason in ("unknown_type", "not_cloudevent"):
                parked = dead_letter_counts(after, reason, name) - dead_letter_counts(before[name], reason, name)
                assert parked == len(read), (name, reason)

    listing = crm(stack, "deadletters", "analytics", "--limit", "500")
    assert listing.returncode == 0, listing.stderr
    assert "unknown_type" in listing.stdout and "crm.from.the.future.v7" in listing.stdout


async def parked_with_key(stack: Stack, service: str, key: bytes) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.postgres.dsn(f"crm_{service}"))
    try:
        return list(
            await conn.fetch("SELECT id, redriven_at FROM dead_letters WHERE message_key = $1 ORDER BY id", key)
        )
    finally:
        await conn.close()


async def wait_parked(stack: Stack, service: str, key: bytes, count: int) -> list[asyncpg.Record]:
    async def probe() -> list[asyncpg.Record] | None:
        rows = await parked_with_key(stack, service, key)
        return rows if len(rows) >= count else None

    rows = await eventually(probe, what=f"{count} dead letters with key {key!r} at {service}")
    assert len(rows) == count, rows  # each arrival parked once, not more
    return rows


def redrove(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    *_, last = result.stdout.strip().splitlines()
    words = last.split()
    assert words[0] == "redrove" and words[2] == "messages", last
    return int(words[1])


async def test_redrive_puts_parked_messages_back(stack: Stack) -> None:
    # Dead letters of its own: still poison when they come back, so parked again on every arrival.
    key = f"redrive-{uuid.uuid4().hex[:8]}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for n in range(3):
            _, value, headers = to_kafka(new_event("crm.from.the.future.v7", "poison", {"n": n}, "/elsewhere", TP))
            await producer.send_and_wait(CASE, value, key=key, headers=headers)
    finally:
        await producer.stop()
    first = await wait_parked(stack, "case", key, 3)

    # by id: exactly those three go back, arrive and are parked again
    assert redrove(crm(stack, "redrive", "case", *(str(r["id"]) for r in first))) == 3
    again = await wait_parked(stack, "case", key, 6)
    assert all(r["redriven_at"] is not None for r in again[:3]) and all(r["redriven_at"] is None for r in again[3:])
    # the ones already redriven are not sent twice
    assert redrove(crm(stack, "redrive", "case", *(str(r["id"]) for r in first))) == 0

    # all: every dead letter not yet redriven, whoever parked it (ours are three of them)
    conn = await asyncpg.connect(stack.postgres.dsn("crm_case"))
    try:
        waiting = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE redriven_at IS NULL")
    finally:
        await conn.close()
    assert redrove(crm(stack, "redrive", "case")) == waiting >= 3
    await wait_parked(stack, "case", key, 9)
    listing = crm(stack, "deadletters", "case", "--limit", "1000")
    assert "redriven" in listing.stdout


async def test_replay_rebuilds_the_same_timeline(stack: Stack) -> None:
    accepted = Accepted()
    await post_all(stack.services["intake"].url, workload("replay", 10, 100, seed=9), accepted)
    await wait_converged(stack, accepted)
    async with api_client(timeout=10) as client:
        old = {c: (await digests(stack, c, client))["notification"] for c in accepted.by_customer}

        on_the_log = await log_size(stack)
        result = crm(stack, "replay", "notification")
        assert result.returncode == 0, result.stderr
        # In a pipe: the total stated once, before the first message, and nothing redrawn.
        assert "\r" not in result.stderr and "\x1b[" not in result.stderr
        m = re.search(r"^replaying ([\d,]+) messages$", result.stderr, re.MULTILINE)
        assert m is not None, result.stderr
        total = int(m.group(1).replace(",", ""))
        assert on_the_log <= total <= await log_size(stack)  # the log's size when it started
        assert total >= 10 * 11  # this test's events, on intake's topic alone
        assert re.search(r"replayed [\d,]+ messages .* in [\d.]+ s, [\d,]+ events/s$", result.stdout.strip())

        new = {c: (await digests(stack, c, client))["notification"] for c in accepted.by_customer}
    assert new == old
    assert all(count == 11 for count, _ in new.values())


async def log_size(stack: Stack) -> int:
    """Messages on every event topic now: the sum of the partitions' ends."""
    ends = PartitionEnds(stack.broker.bootstrap, client_options={})
    try:
        return sum((await ends.read(await ends.partitions(ALL_EVENT_TOPICS), timeout_s=25)).values())
    finally:
        await ends.stop()


async def test_status_lists_every_service_and_each_groups_lag_per_partition(stack: Stack) -> None:
    accepted = Accepted()
    await post_all(stack.services["intake"].url, workload("status", 5, 20, seed=10), accepted)
    await wait_converged(stack, accepted)
    # Consumers commit offsets once idle or every CONSUMER_COMMIT_INTERVAL_MS (500): give the
    # last commit a few seconds to land, then every partition must show it.
    for _ in range(10):
        result = await asyncio.to_thread(crm, stack, "status")
        assert result.returncode == 0, result.stdout + result.stderr
        summary, _, by_partition = result.stdout.partition("consumer group")
        if re.search(rf"crm-case\s+{re.escape(INTAKE)}\s+0:0 1:0 2:0 3:0 4:0 5:0", by_partition):
            break
        await asyncio.sleep(0.5)
    for name in stack.services:
        assert name in summary
    assert "down" not in summary
    # one line per consumer group and topic: every partition with how far the group is behind
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in by_partition.splitlines()[1:] if line.strip()}
    # one group per service: analytics' KPI fold has no group of its own (no crm-analytics-kpi)
    groups = [f"crm-{name}" for name in stack.services]
    # all but intake's own topic, which intake projects as it stores it (its group never reads it)
    assert set(lines) == {(g, t) for g in groups for t in ALL_EVENT_TOPICS} - {("crm-intake", INTAKE)}, lines.keys()
    for figures in lines.values():
        partitions = dict(f.split(":") for f in figures)
        assert sorted(map(int, partitions)) == list(range(6))
        assert all(int(n) >= 0 for n in partitions.values())
    # caught up: the timelines converged, so the services' own groups have committed what they read
    intake_lag = sum(int(f.split(":")[1]) for f in lines[("crm-case", INTAKE)])
    assert intake_lag == 0, lines[("crm-case", INTAKE)]
    # and a group that never read anything is behind by every message on the topic
    never_read = await group_lags(stack.broker.bootstrap, [f"crm-nobody-{uuid.uuid4().hex[:6]}"])
    assert sum(next(lag for (_, topic), lag in never_read.items() if topic == INTAKE).values()) >= 20


async def test_every_service_freezes_its_start_up_heap_and_times_collector_passes(stack: Stack) -> None:
    """servicekit.gc_tuning: the start-up heap is frozen (the collector's full passes no longer walk
    it) and every pass of the collector is timed, per service process."""
    async with api_client(timeout=10) as client:
        for name, svc in stack.services.items():
            samples = {
                (s.name, s.labels.get("generation")): s.value
                for family in text_string_to_metric_families((await client.get(f"{svc.url}/metrics")).text)
                for s in family.samples
                if s.labels.get("service") == name
            }
            assert samples[("crm_gc_frozen_objects", None)] > 10_000, name
            # the meter's series exist from the start; passes come with allocations (not yet, maybe)
            assert all(("crm_gc_pause_seconds_count", str(g)) in samples for g in range(3)), name
