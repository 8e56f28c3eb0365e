"""End to end: four real service processes, the embedded broker and PostgreSQL.

Every accepted event shows up exactly once in every service's timeline, and the four digests
agree, also when a consumer service is SIGKILLed mid-stream or the relay dies between the
database commit and the broker's acknowledgement.
"""

import asyncio
import random
import signal
import uuid

import asyncpg
import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client
from tests.e2e.conftest import (
    Accepted,
    interaction,
    metric_total,
    post_all,
    retry_unanswered,
    timeline_ids,
    wait_converged,
)
from tests.e2e.helpers import post_and_wait

pytestmark = pytest.mark.e2e


def workload(prefix: str, customers: int, total: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    emails = [f"{prefix}-{i}@example.com" for i in range(customers)]
    # every customer gets total/customers interactions, shuffled across customers
    bodies = [interaction(emails[i % customers], rng) for i in range(total)]
    rng.shuffle(bodies)
    return bodies


async def assert_exact(stack: Stack, accepted: Accepted) -> None:
    """Each service's full timeline holds exactly the accepted ids: nothing lost, nothing twice."""
    for customer, ids in list(accepted.by_customer.items())[:10]:
        for svc in stack.services.values():
            got = await timeline_ids(svc.url, customer)
            assert len(got) == len(set(got)) == len(ids)
            assert set(got) == set(ids)


async def test_thousand_interactions_fifty_customers_equal_everywhere(stack: Stack) -> None:
    accepted = Accepted()
    await post_all(stack.services["intake"].url, workload("sync", 50, 1000, seed=1), accepted)

    assert len(accepted.by_customer) == 50
    # 20 interactions each, plus the customer.created event of the first one
    assert sorted({len(ids) for ids in accepted.by_customer.values()}) == [21]
    converged = await wait_converged(stack, accepted)
    assert all(count == 21 for count, _ in converged.values())
    await assert_exact(stack, accepted)


async def test_sigkill_a_consumer_service_mid_stream(stack: Stack) -> None:
    accepted = Accepted()
    bodies = workload("kill", 50, 1000, seed=2)
    victim = stack.services["notification"]

    async def kill_midway() -> None:
        while sum(len(v) for v in accepted.by_customer.values()) < 400:
            await asyncio.sleep(0.01)
        victim.kill()

    await asyncio.gather(post_all(stack.services["intake"].url, bodies, accepted), kill_midway())
    assert victim.proc is not None and victim.proc.returncode == -signal.SIGKILL
    victim.start()
    await asyncio.to_thread(victim.wait_ready, 90)

    converged = await wait_converged(stack, accepted)
    assert len(converged) == 50
    assert all(count == 21 for count, _ in converged.values())
    await assert_exact(stack, accepted)


@pytest.mark.parametrize("crash_at", ["relay.after_ack", "relay.before_send@3"])
async def test_relay_killed_between_commit_and_ack_delivers_once(stack: Stack, crash_at: str) -> None:
    intake = stack.services["intake"]
    async with api_client() as client:
        before = {
            name: metric_total((await client.get(f"{svc.url}/metrics")).text, "crm_events_duplicate_total")
            for name, svc in stack.services.items()
            if name != "intake"
        }
    intake.stop()
    intake.start(extra_env={"EVENTKIT_CRASH_AT": crash_at})
    try:
        await asyncio.to_thread(intake.wait_ready, 60)
        accepted = Accepted()
        bodies = workload(f"relay-{uuid.uuid4().hex[:6]}", 10, 60, seed=3)
        await post_all(intake.url, bodies, accepted, concurrency=4, tolerate_errors=True)
        assert intake.proc is not None
        await asyncio.to_thread(intake.proc.wait, 30)
        assert intake.proc.returncode == 137  # died at the crash point, like SIGKILL: no cleanup ran
        assert accepted.by_customer, "nothing was accepted before the crash"
    finally:
        # The later tests of this module share the stack: intake runs again whatever happened here.
        intake.stop()
        intake.start()
        await asyncio.to_thread(intake.wait_ready, 60)

    await retry_unanswered(intake.url, accepted)  # a request may have been stored, its answer lost
    await wait_converged(stack, accepted)
    await assert_exact(stack, accepted)

    if crash_at == "relay.after_ack":
        # The acknowledged batch went out again after the restart; the consumers dropped the repeats.
        async with api_client() as client:
            for name, svc in stack.services.items():
                if name == "intake":
                    continue
                after = metric_total((await client.get(f"{svc.url}/metrics")).text, "crm_events_duplicate_total")
                assert after > before[name], name


async def test_read_your_writes_and_pages(stack: Stack) -> None:
    intake = stack.services["intake"].url
    rng = random.Random(4)
    email = f"ryw-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        customer = (await post_and_wait(client, stack, interaction(email, rng), timeout_ms=5000))["customer_id"]
        never = str(uuid.uuid4())
        r = await client.get(
            f"{stack.services['case'].url}/v1/customers/{customer}/timeline",
            params={"wait_for": never, "timeout_ms": 100},
        )
        assert r.status_code == 504
        assert r.json()["error"] == "wait_timeout"
        assert len(r.json()["events"]) == 2  # the current state comes along

        for _ in range(11):
            await client.post(
                f"{intake}/v1/interactions", json={**interaction(email, rng), "customer": {"id": customer}}
            )
        last = (await client.post(f"{intake}/v1/interactions", json=interaction(email.upper(), rng))).json()
        assert last["customer_id"] == customer  # the same email, differently spelled, is the same customer
        r = await client.get(
            f"{stack.services['analytics'].url}/v1/customers/{customer}/timeline",
            params={"wait_for": last["event_id"], "timeout_ms": 5000, "limit": 5},
        )
        page1 = r.json()
        assert len(page1["events"]) == 5 and page1["next_before"]
        times = [e["time"] for e in page1["events"]]
        assert times == sorted(times, reverse=True)
        notification = stack.services["notification"].url
        await client.get(f"{notification}/v1/customers/{customer}/timeline", params={"wait_for": last["event_id"]})
        bad = await client.get(f"{intake}/v1/customers/{customer}/timeline", params={"before": "nonsense!"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "query.before"
    ids = await timeline_ids(stack.services["notification"].url, customer)
    assert len(ids) == len(set(ids)) == 14  # created + 13 interactions


@pytest.mark.parametrize("reader", ["case", "intake"])
async def test_live_stream_sends_new_timeline_items(stack: Stack, reader: str) -> None:
    """Live, not from the stream's catch-up poll (every 3 s): case's consumer publishes what it
    applied; intake's own events, which its consumer does not read, come from its relay."""
    intake = stack.services["intake"].url
    rng = random.Random(8)
    email = f"live-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        customer = (await post_and_wait(client, stack, interaction(email, rng), [reader]))["customer_id"]
        url = stack.services[reader].url
        received: list[str] = []

        async def listen() -> None:
            async with client.stream("GET", f"{url}/v1/customers/{customer}/timeline/stream") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                async for line in r.aiter_lines():
                    if line.startswith("id: "):
                        received.append(line[4:])
                        return

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)  # subscribed
        second = (
            await client.post(
                f"{intake}/v1/interactions", json={**interaction(email, rng), "customer": {"id": customer}}
            )
        ).json()
        await asyncio.wait_for(listener, 2.5)
    assert received == [second["event_id"]]


async def test_intake_has_its_own_events_on_its_timeline_when_it_answers(stack: Stack) -> None:
    """contracts PROJECTED_WHEN_STORED: intake's timeline reads its events from its event store,
    so its timeline has them when the POST answers, and its consumer leaves its own topic to the
    other services."""
    intake = stack.services["intake"].url
    email = f"own-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        posted = (await client.post(f"{intake}/v1/interactions", json=interaction(email, random.Random(10)))).json()
        page = await client.get(f"{intake}/v1/customers/{posted['customer_id']}/timeline")  # no wait_for
        assert page.status_code == 200, page.text
        assert {e["event_id"] for e in page.json()["events"]} == set(posted["event_ids"])
        metrics = (await client.get(f"{intake}/metrics")).text
    # Read from its event store: written once, never copied into its timeline table.
    conn = await asyncpg.connect(stack.services["intake"].env["DATABASE_URL"])
    try:
        ids = [uuid.UUID(i) for i in posted["event_ids"]]
        assert await conn.fetchval("SELECT count(*) FROM timeline WHERE event_id = ANY($1::uuid[])", ids) == 0
        assert await conn.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1::uuid[])", ids) == len(ids)
    finally:
        await conn.close()
    async with api_client(timeout=10) as client:
        ready = (await client.get(f"{intake}/readyz")).json()
    assert ready["checks"]["consumer_assigned"], ready  # it still reads the other three topics
    read = [
        line for line in metrics.splitlines() if line.startswith(("crm_events_consumed_total{", "crm_consumer_lag{"))
    ]
    assert not [line for line in read if 'topic="crm.intake.v1"' in line], read


async def test_one_post_shows_in_all_four_timelines_within_a_second(stack: Stack) -> None:
    """The issue's "done when": one POST, and every service has the event within a second."""
    email = f"done-{uuid.uuid4().hex[:8]}@example.com"
    async with api_client(timeout=10) as client:
        r = await client.post(
            f"{stack.services['intake'].url}/v1/interactions", json=interaction(email, random.Random(9))
        )
        assert r.status_code == 202, r.text
        posted = r.json()

        async def timeline(url: str) -> httpx.Response:
            return await client.get(
                f"{url}/v1/customers/{posted['customer_id']}/timeline",
                params={"wait_for": posted["event_id"], "timeout_ms": 1000},
            )

        # All four at once, right after the answer: each must see it within the same second.
        answers = await asyncio.gather(*(timeline(svc.url) for svc in stack.services.values()))
    for name, answer in zip(stack.services, answers, strict=True):
        assert answer.status_code == 200, (name, answer.text)
        events = {e["event_id"]: e for e in answer.json()["events"]}
        assert posted["event_id"] in events, name
        assert events[posted["event_id"]]["type"] == "crm.interaction.recorded.v1", name
