"""The four services as real processes on the embedded stack, for the whole e2e session."""

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client, running_stack

CHANNELS = ["web", "chat", "email", "phone", "sms", "social", "kiosk", "in_person"]
# No complaints or requests: those open cases (and notifications), whose events would join the
# timelines; tests here count exactly what intake accepted. Case flows have their own tests.
KINDS = ["message", "call", "visit", "purchase", "note"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), {"LOG_LEVEL": "INFO"}) as s:
        yield s


def interaction(email: str, rng: random.Random) -> dict[str, Any]:
    return {
        "customer": {"email": email},
        "channel": rng.choice(CHANNELS),
        "direction": rng.choice(["inbound", "outbound"]),
        "kind": rng.choice(KINDS),
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=rng.randint(0, 10_000))).isoformat(),
        "content": f"hello {rng.randint(0, 10**6)}",
        "metadata": {"campaign": rng.choice(["spring", "none"])},
    }


class Accepted:
    """What intake answered 202 for: the events we expect everywhere, by customer."""

    def __init__(self) -> None:
        self.by_customer: dict[str, list[str]] = defaultdict(list)
        self.failed = 0
        # Requests without an answer (the service died): they may or may not have been stored.
        self.unanswered: list[tuple[dict[str, Any], str]] = []

    def add(self, body: dict[str, Any]) -> None:
        self.by_customer[body["customer_id"]].extend(body["event_ids"])


async def post_all(
    url: str,
    bodies: list[dict[str, Any]],
    accepted: Accepted,
    concurrency: int = 16,
    tolerate_errors: bool = False,
) -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            key = str(uuid.uuid4())
            try:
                r = await client.post(f"{url}/v1/interactions", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                if not tolerate_errors:
                    raise
                accepted.failed += 1
                accepted.unanswered.append((body, key))
                continue
            if r.status_code == 202:
                accepted.add(r.json())
            elif tolerate_errors:
                accepted.failed += 1
                accepted.unanswered.append((body, key))
            else:
                raise AssertionError(f"{r.status_code}: {r.text}")

    async with api_client(timeout=10) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))


async def retry_unanswered(url: str, accepted: Accepted) -> None:
    """Ask again, with the same keys, what went unanswered: the answer says what was stored."""
    async with api_client(timeout=10) as client:
        for body, key in accepted.unanswered:
            r = await client.post(f"{url}/v1/interactions", json=body, headers={"Idempotency-Key": key})
            assert r.status_code == 202, r.text
            accepted.add(r.json())
    accepted.unanswered.clear()


async def digests(stack: Stack, customer_id: str, client: httpx.AsyncClient) -> dict[str, tuple[int, str]]:
    out = {}
    for name, svc in stack.services.items():
        r = await client.get(f"{svc.url}/v1/customers/{customer_id}/timeline/digest")
        r.raise_for_status()
        body = r.json()
        out[name] = (body["events"], body["digest"])
    return out


async def wait_converged(stack: Stack, accepted: Accepted, timeout_s: float = 90) -> dict[str, tuple[int, str]]:
    """Until every customer's digest is equal in all four services with the exact count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = dict(accepted.by_customer)
    last: dict[str, dict[str, tuple[int, str]]] = {}
    async with api_client(timeout=10) as client:
        while pending:
            for customer, ids in list(pending.items()):
                d = await digests(stack, customer, client)
                last[customer] = d
                if len(set(d.values())) == 1 and next(iter(d.values()))[0] == len(ids):
                    del pending[customer]
            if pending and loop.time() > deadline:
                sample = {c: last[c] for c in list(pending)[:3]}
                raise AssertionError(f"{len(pending)} customers not converged; expected counts differ: {sample}")
            if pending:
                await asyncio.sleep(0.25)
    return {c: last[c][next(iter(last[c]))] for c in accepted.by_customer}


async def timeline_ids(url: str, customer_id: str) -> list[str]:
    ids: list[str] = []
    before = None
    async with api_client(timeout=10) as client:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if before:
                params["before"] = before
            r = await client.get(f"{url}/v1/customers/{customer_id}/timeline", params=params)
            r.raise_for_status()
            body = r.json()
            ids.extend(e["event_id"] for e in body["events"])
            before = body["next_before"]
            if not before:
                return ids


def metric_total(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
