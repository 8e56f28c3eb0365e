"""`crm replay` against the consumer path: after rebuilding notification's timeline from the log,
every customer's digest equals what the four consumers built (a merge included, with its
redirect), the rows are the same, and replay skipped exactly the messages the consumer parked."""

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from crmtools.cli import group_lags
from crmtools.devstack import Stack
from eventkit.envelope import new_event, to_kafka

from contracts.topics import ALL_EVENT_TOPICS, INTAKE
from tests.conftest import api_client, eventually
from tests.e2e.conftest import Accepted, digests, post_all, wait_converged
from tests.e2e.test_operations import TP, crm
from tests.e2e.test_timeline_sync import workload

pytestmark = pytest.mark.e2e


def body(customer: dict[str, Any], channel: str) -> dict[str, Any]:
    return {
        "customer": customer,
        "channel": channel,
        "direction": "inbound",
        "kind": "message",
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": "replay me",
    }


async def merged_customer(intake: str, client: httpx.AsyncClient, accepted: Accepted) -> tuple[str, str]:
    """One customer by email, one by phone, then a contact naming both: (survivor, merged id)."""
    tag = uuid.uuid4().hex[:6]
    email, phone = f"replay.{tag}@example.com", f"+1415555{int(tag, 16) % 9000 + 1000}"
    answers = []
    contacts = [({"email": email}, "email"), ({"phone": phone}, "phone"), ({"email": email, "phone": phone}, "chat")]
    for customer, channel in contacts:
        r = await client.post(f"{intake}/v1/interactions", json=body(customer, channel))
        assert r.status_code == 202, r.text
        answers.append(r.json())
    survivor, merged = answers[0]["customer_id"], answers[1]["customer_id"]
    assert answers[2]["customer_id"] == survivor
    for a in answers:
        accepted.add(a)
    # the merged customer's own events are read under the survivor
    accepted.by_customer[survivor].extend(accepted.by_customer.pop(merged))
    return survivor, merged


async def parked(stack: Stack, service: str) -> int:
    """Distinct log positions the service's consumer dead-lettered because they did not decode or validate."""
    conn = await asyncpg.connect(stack.postgres.dsn(f"crm_{service}"))
    try:
        count: int = await conn.fetchval(
            "SELECT count(DISTINCT (topic, kafka_partition, kafka_offset)) FROM dead_letters"
            " WHERE reason <> 'apply_failed'"
        )
        return count
    finally:
        await conn.close()


async def full_timeline(client: httpx.AsyncClient, url: str, customer: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = (await client.get(f"{url}/v1/customers/{customer}/timeline", params=params)).json()
        events += page["events"]
        if not page.get("next_before"):
            return events
        params["before"] = page["next_before"]


async def test_replay_equals_the_consumer_path_with_a_merge_and_poison(stack: Stack) -> None:
    intake = stack.services["intake"].url
    accepted = Accepted()
    await post_all(intake, workload("replay-eq", 6, 60, seed=13), accepted)
    async with api_client(timeout=10, follow_redirects=False) as client:
        survivor, merged = await merged_customer(intake, client, accepted)

    # Poison keyed by the survivor: not a CloudEvent, and a known type whose data does not validate.
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(INTAKE, b"\x00\xffnot an event", key=survivor.encode())
        key, value, headers = to_kafka(
            new_event("crm.interaction.recorded.v1", survivor, {"customer_id": survivor}, "/crm/test", TP)
        )
        await producer.send_and_wait(INTAKE, value, key=key, headers=headers)
    finally:
        await producer.stop()

    await wait_converged(stack, accepted)

    async def notification_caught_up() -> bool | None:
        lags = await group_lags(stack.broker.bootstrap, ["crm-notification"])
        return True if all(sum(lags[("crm-notification", t)].values()) == 0 for t in ALL_EVENT_TOPICS) else None

    await eventually(notification_caught_up, what="notification's consumer at the end of every topic")
    skipped_by_consumer = await parked(stack, "notification")
    assert skipped_by_consumer >= 2
    notification = stack.services["notification"].url
    async with api_client(timeout=10, follow_redirects=False) as client:
        before = {c: await full_timeline(client, notification, c) for c in accepted.by_customer}
        consumer_digests = {c: await digests(stack, c, client) for c in accepted.by_customer}
        assert all(len(set(d.values())) == 1 for d in consumer_digests.values()), consumer_digests

        result = crm(stack, "replay", "notification")
        assert result.returncode == 0, result.stderr
        m = re.search(r"replayed [\d,]+ messages into notification's timeline \((\d+) not applicable\)", result.stdout)
        assert m is not None, result.stdout
        assert int(m.group(1)) == skipped_by_consumer  # the same messages the consumer parked, no more

        after = {c: await full_timeline(client, notification, c) for c in accepted.by_customer}
        replayed_digests = {c: (await digests(stack, c, client))["notification"] for c in accepted.by_customer}
        moved = await client.get(f"{notification}/v1/customers/{merged}/timeline")

    assert after == before  # the same rows, data included, in the same order
    assert replayed_digests == {c: d["intake"] for c, d in consumer_digests.items()}
    assert replayed_digests[survivor][0] == len(accepted.by_customer[survivor]) == 6  # the merge is one of them
    assert moved.status_code == 308 and moved.headers["location"].startswith(f"/v1/customers/{survivor}/")
