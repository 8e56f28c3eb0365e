"""No single accepted request stalls publication (issue: one 800 KB interaction stopped intake's
relay for everyone). On the real stack: an event too large is refused with 413 before it is
stored; one already in a store (written before the limit) is parked and the rest go out."""

import asyncio
import os
import random
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from crmtools.devstack import SERVICES, Stack
from eventkit.envelope import new_event
from eventkit.eventstore import DEFAULT_MAX_EVENT_BYTES, Append, EventStore

from contracts.topics import INTAKE
from tests.conftest import api_client, eventually
from tests.e2e.conftest import interaction

pytestmark = pytest.mark.e2e
TP = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"


def body(email: str, **metadata: Any) -> dict[str, Any]:
    """An interaction from `email` (no complaint or request: no case joins the timelines)."""
    return {**interaction(email, random.Random(email)), "metadata": metadata}


async def on_every_timeline(stack: Stack, client: httpx.AsyncClient, customer_id: str, event_id: str) -> None:
    for name in SERVICES:
        r = await client.get(
            f"{stack.services[name].url}/v1/customers/{customer_id}/timeline",
            params={"wait_for": event_id, "timeout_ms": 20_000},
        )
        assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:200]}"


async def test_an_interaction_whose_event_is_too_large_is_refused_and_the_pipeline_goes_on(stack: Stack) -> None:
    intake = stack.services["intake"].url
    big = "x" * (DEFAULT_MAX_EVENT_BYTES + 1000)  # under the 1 MiB body limit, over the event limit
    async with api_client(timeout=30) as client:
        r = await client.post(
            f"{intake}/v1/interactions", json=body(f"big-{uuid.uuid4().hex[:8]}@example.com", blob=big)
        )
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "event_too_large" and r.json()["limit"] == DEFAULT_MAX_EVENT_BYTES
        assert "index" not in r.json()

        small_email = f"small-{uuid.uuid4().hex[:8]}@example.com"
        items = [body(small_email), body(f"big-{uuid.uuid4().hex[:8]}@example.com", blob=big[:600_000])]
        r = await client.post(f"{intake}/v1/interactions:batch", json={"items": items})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "event_too_large" and r.json()["index"] == 1
        r = await client.get(f"{intake}/v1/customers", params={"email": small_email})
        assert r.status_code == 200 and r.json()["items"] == [], r.text  # all or nothing: not recorded

        r = await client.post(f"{intake}/v1/interactions", json=body(f"after-{uuid.uuid4().hex[:8]}@example.com"))
        assert r.status_code == 202, r.text
        await on_every_timeline(stack, client, r.json()["customer_id"], r.json()["event_id"])


async def test_a_poison_event_already_stored_is_parked_and_later_events_reach_every_service(stack: Stack) -> None:
    intake = stack.services["intake"].url
    dsn = stack.services["intake"].env["DATABASE_URL"]
    # As a data directory written before the limit may hold: 1.2 MB, over the producer's 1 MiB.
    poison = new_event(
        "crm.test.oversized.v1", f"poison-{uuid.uuid4().hex[:8]}", {"blob": "y" * 1_200_000}, "/crm/intake", TP
    )
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            unlimited = EventStore("e2e", max_event_bytes=10 * 1024 * 1024)
            await unlimited.append(conn, [Append(f"test-{poison.subject}", None, [poison], INTAKE)])
            await conn.execute("SELECT pg_notify('eventkit_outbox', '')")
    finally:
        await conn.close()

    async with api_client(timeout=30) as client:
        r = await client.post(f"{intake}/v1/interactions", json=body(f"later-{uuid.uuid4().hex[:8]}@example.com"))
        assert r.status_code == 202, r.text
        await on_every_timeline(stack, client, r.json()["customer_id"], r.json()["event_id"])

        async def parked_shown() -> str | None:
            metrics = (await client.get(f"{intake}/metrics")).text
            line = next((m for m in metrics.splitlines() if m.startswith("crm_outbox_parked_events{")), "")
            return line if line and float(line.rsplit(" ", 1)[1]) >= 1 else None

        await eventually(parked_shown, 20, "intake's crm_outbox_parked_events counts the parked event")
        ready = await client.get(f"{intake}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["outbox_flowing"], ready.text

    env = {**os.environ, "CRM_INTAKE_DATABASE_URL": dsn}
    crm = [sys.executable, "-m", "crmtools.cli"]
    listed = await asyncio.to_thread(
        subprocess.run, [*crm, "parked", "intake"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert poison.id in listed.stdout and "MessageSizeTooLargeError" in listed.stdout
    # Queued again while the cause stands (the producer's limit): refused again, parked again.
    again = await asyncio.to_thread(
        subprocess.run, [*crm, "unpark", "intake", poison.id], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "queued 1" in again.stdout, again.stdout + again.stderr

    async def parked_again() -> bool | None:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM outbox JOIN events USING (position) WHERE event_id = $1) AS queued,"
                " (SELECT count(*) FROM outbox_parked JOIN events USING (position) WHERE event_id = $1) AS parked",
                uuid.UUID(poison.id),
            )
        finally:
            await conn.close()
        return True if row and (row["queued"], row["parked"]) == (0, 1) else None

    await eventually(parked_again, 20, "the unparked event parked again")
