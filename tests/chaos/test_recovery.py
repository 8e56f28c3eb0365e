"""SPEC §12 under fire: SIGKILL of each service in turn under load, a PostgreSQL restart, and
two instances of a service sharing the work while one dies. Nothing accepted is lost, nothing
is applied twice, and all four digests agree afterwards."""

import asyncio
import random
import signal
import time
import uuid
from typing import Any

import httpx
import pytest
from eventkit.devstack import ServiceProcess, Stack, free_port

from tests.conftest import api_client
from tests.e2e.conftest import Accepted, interaction, wait_converged
from tests.e2e.test_timeline_sync import assert_exact

pytestmark = pytest.mark.e2e


class Client:
    """A channel front end that does what the API asks: retry 503s and lost connections with the
    same Idempotency-Key until the request is accepted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted = Accepted()
        self.statuses: dict[int, int] = {}
        self.retry_after_missing = 0

    async def post(self, client: httpx.AsyncClient, body: dict[str, Any], give_up_s: float = 90) -> None:
        key = str(uuid.uuid4())
        deadline = time.monotonic() + give_up_s
        while time.monotonic() < deadline:
            try:
                r = await client.post(f"{self.url}/v1/interactions", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
            if r.status_code == 202:
                self.accepted.add(r.json())
                return
            if r.status_code == 503:
                if "retry-after" not in r.headers:
                    self.retry_after_missing += 1
                await asyncio.sleep(float(r.headers.get("retry-after", "1")) / 4)
                continue
            raise AssertionError(f"unexpected {r.status_code}: {r.text}")
        raise AssertionError("not accepted in time")

    async def steady(self, bodies: list[dict[str, Any]], rate_per_s: float, concurrency: int = 8) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for b in bodies:
            queue.put_nowait(b)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                await self.post(client, queue.get_nowait())
                await asyncio.sleep(concurrency / rate_per_s)

        async with api_client(timeout=5) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))


def bodies(prefix: str, customers: int, total: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [interaction(f"{prefix}-{i % customers}@example.com", rng) for i in range(total)]


async def test_postgres_restart_means_503_with_retry_after_and_one_event_per_retried_request(
    chaos_stack: Stack,
) -> None:
    stack = chaos_stack
    client = Client(stack.services["intake"].url)
    load = asyncio.create_task(client.steady(bodies("pg", 10, 300, seed=21), rate_per_s=60))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(stack.postgres.stop)
    await asyncio.sleep(3)  # requests meanwhile meet a database that is not there
    async with api_client() as http:
        ready = await http.get(f"{stack.services['intake'].url}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
    await asyncio.to_thread(stack.postgres.start)
    await load

    assert client.statuses.get(503, 0) > 0, client.statuses  # the outage was seen...
    assert set(client.statuses) <= {202, 503}, client.statuses  # ...and never as a 500
    assert client.retry_after_missing == 0
    assert sum(len(ids) for ids in client.accepted.by_customer.values()) == 300 + 10  # one event per request
    await wait_converged(stack, client.accepted, timeout_s=60)
    await assert_exact(stack, client.accepted)


async def test_sigkill_each_service_in_turn_under_load(chaos_stack: Stack) -> None:
    stack = chaos_stack
    client = Client(stack.services["intake"].url)
    load = asyncio.create_task(client.steady(bodies("kill", 20, 800, seed=22), rate_per_s=40))
    rng = random.Random(23)
    killed = []
    for name in ("case", "intake", "notification", "analytics"):
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        svc = stack.services[name]
        svc.kill()
        assert svc.proc is not None and svc.proc.returncode == -signal.SIGKILL
        killed.append(name)
        svc.start()
        await asyncio.to_thread(svc.wait_ready, 90)
    await load
    recovered = time.monotonic()
    await wait_converged(stack, client.accepted, timeout_s=30)  # SPEC §12: equal within 30 s of recovery
    print(f"\nkilled {killed}; converged {time.monotonic() - recovered:.1f} s after the load ended")
    assert sum(len(ids) for ids in client.accepted.by_customer.values()) == 800 + 20
    await assert_exact(stack, client.accepted)


async def test_two_instances_share_partitions_and_one_survives_the_other(chaos_stack: Stack) -> None:
    stack = chaos_stack
    first = stack.services["analytics"]
    second = ServiceProcess("analytics", free_port(), {**first.env}, stack.logs / "analytics-2.log")
    second.env["HTTP_PORT"] = str(second.port)
    second.start()
    try:
        await asyncio.to_thread(second.wait_ready, 90)  # ready = it was given partitions
        async with api_client() as http:
            for svc in (first, second):
                assert (await http.get(f"{svc.url}/readyz")).json()["checks"]["consumer_assigned"]

        client = Client(stack.services["intake"].url)
        load = asyncio.create_task(client.steady(bodies("pair", 20, 400, seed=24), rate_per_s=60))
        await asyncio.sleep(2)
        second.kill()  # its partitions move to the first after the session timeout
        await load
        await wait_converged(stack, client.accepted, timeout_s=60)
        await assert_exact(stack, client.accepted)
    finally:
        second.stop()
