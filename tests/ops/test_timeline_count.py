"""Every service counts the events on its timeline up to a shared cutoff
(crm_timeline_settled_events), so that Prometheus can compare the four timelines (alert
CrmTimelineDivergence). On the real stack: the counts grow alike when the services apply the same
events, and an event missing from one service's timeline shows as one fewer there.

The ops stack counts every second, events older than 3 s. Counts are compared by their change
between two snapshots: other ops tests publish events straight onto intake's topic, which intake
itself never reads, so the absolute counts there may differ by design of those tests.
"""

import asyncio
import random
import time
import uuid

import asyncpg
import httpx
import pytest
from crmtools.devstack import Stack
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import api_client
from tests.ops.test_dashboards import interaction

pytestmark = pytest.mark.e2e


async def settled(client: httpx.AsyncClient, stack: Stack) -> dict[str, tuple[float, float]]:
    """Per service: (cutoff, events on its timeline before it), from its /metrics."""
    out = {}
    for name, svc in stack.services.items():
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families((await client.get(f"{svc.url}/metrics")).text)
            for s in family.samples
            if s.name.startswith("crm_timeline_settled_") and s.labels.get("service") == name
        }
        out[name] = (samples["crm_timeline_settled_before_seconds"], samples["crm_timeline_settled_events"])
    return out


async def counts_at_one_cutoff(client: httpx.AsyncClient, stack: Stack, not_before: float) -> dict[str, float]:
    """The counts of the first snapshot in which all four services count up to one cutoff, at
    or after `not_before` (so every count was taken after that moment and covers what was
    applied before it)."""
    deadline = time.monotonic() + 30
    while True:
        snapshot = await settled(client, stack)
        cutoffs = {cutoff for cutoff, _ in snapshot.values()}
        if len(cutoffs) == 1 and cutoffs.pop() >= not_before:
            return {name: count for name, (_, count) in snapshot.items()}
        assert time.monotonic() < deadline, f"no common cutoff after {not_before}: {snapshot}"
        await asyncio.sleep(0.2)


async def test_the_timelines_count_alike_and_a_missing_event_shows(ops_stack: Stack) -> None:
    rng = random.Random(26)
    async with api_client(timeout=15) as client:
        before = await counts_at_one_cutoff(client, ops_stack, time.time())

        # Three interactions, each on all four timelines (read-your-writes) before `applied`.
        events = []
        for _ in range(3):
            email = f"count-{uuid.uuid4().hex[:8]}@example.com"
            r = await client.post(f"{ops_stack.services['intake'].url}/v1/interactions", json=interaction(email, rng))
            assert r.status_code == 202, r.text
            events.append(r.json())
            for svc in ops_stack.services.values():
                read = await client.get(
                    f"{svc.url}/v1/customers/{events[-1]['customer_id']}/timeline",
                    params={"wait_for": events[-1]["event_id"], "timeout_ms": 10_000},
                )
                assert read.status_code == 200, read.text
        applied = time.time()
        after = await counts_at_one_cutoff(client, ops_stack, applied)
        grown = {name: after[name] - before[name] for name in after}
        assert len(set(grown.values())) == 1 and min(grown.values()) >= 3, grown

        # One of them removed from notification's timeline: notification counts one fewer.
        conn = await asyncpg.connect(ops_stack.services["notification"].env["DATABASE_URL"])
        try:
            row = await conn.fetchrow(
                "DELETE FROM timeline WHERE event_id = $1 RETURNING *", uuid.UUID(events[0]["event_id"])
            )
            assert row is not None
            try:
                removed = await counts_at_one_cutoff(client, ops_stack, time.time())
            finally:  # put it back: the stack serves other tests
                await conn.execute(
                    "INSERT INTO timeline (customer_id, time, event_id, type, source, data)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    *(row[c] for c in ("customer_id", "time", "event_id", "type", "source", "data")),
                )
        finally:
            await conn.close()
        change = {name: removed[name] - after[name] for name in removed}
        others = {change[name] for name in change if name != "notification"}
        assert len(others) == 1 and change["notification"] == others.pop() - 1, change
