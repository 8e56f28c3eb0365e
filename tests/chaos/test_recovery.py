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
from tests.e2e.conftest import Accepted, digests, interaction, timeline_ids, wait_converged
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


class AgentClient:
    """An agent's desk that retries like the API asks: each command names the version it decided
    on; after a lost answer (a kill) it reloads the case and repeats only what did not happen."""

    def __init__(self, case_url: str) -> None:
        self.url = case_url

    async def _get(self, client: httpx.AsyncClient, case_id: str) -> dict[str, Any] | None:
        while True:
            try:
                r = await client.get(f"{self.url}/v1/cases/{case_id}")
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if r.status_code == 404:
                return None
            if r.status_code == 200:
                case: dict[str, Any] = r.json()
                return case
            await asyncio.sleep(0.2)  # 503 while the database restarts

    async def open(self, client: httpx.AsyncClient, customer_id: str, case_id: str) -> None:
        body = {"customer_id": customer_id, "type": "repair", "priority": "high", "case_id": case_id}
        while True:
            try:
                r = await client.post(f"{self.url}/v1/cases", json=body)
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if r.status_code in (200, 201):
                return
            assert r.status_code in (404, 503), r.text  # 404: the customer has not reached case yet
            await asyncio.sleep(0.2)

    async def command(
        self, client: httpx.AsyncClient, case_id: str, path: str, body: dict[str, Any], done: Any
    ) -> None:
        while True:
            case = await self._get(client, case_id)
            assert case is not None
            if done(case):
                return
            try:
                r = await client.post(
                    f"{self.url}/v1/cases/{case_id}/{path}", json=body, headers={"If-Match": f'"{case["version"]}"'}
                )
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if r.status_code == 200:
                return
            assert r.status_code in (409, 503), r.text  # 409: it moved on (maybe our own lost write)
            await asyncio.sleep(0.1)


async def test_case_commands_survive_kills_and_apply_once(chaos_stack: Stack) -> None:
    stack = chaos_stack
    intake = Client(stack.services["intake"].url)
    desk = AgentClient(stack.services["case"].url)
    rng = random.Random(25)
    customers = bodies("desk", 8, 8, seed=26)
    async with api_client(timeout=5) as client:
        for body in customers:
            await intake.post(client, body)
    case_of = {cid: str(uuid.uuid4()) for cid in intake.accepted.by_customer}

    async def work(customer: str, case_id: str, n: int) -> None:
        async with api_client(timeout=5) as client:
            await desk.open(client, customer, case_id)
            await desk.command(client, case_id, "assign", {"owner": f"agent-{n}"}, lambda c: c["owner"] == f"agent-{n}")
            await desk.command(client, case_id, "status", {"status": "open"}, lambda c: c["status"] != "new")
            await desk.command(client, case_id, "status", {"status": "resolved"}, lambda c: c["status"] == "resolved")

    async def kill_twice() -> None:
        for name in ("case", "intake", "case"):
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            svc = stack.services[name]
            svc.kill()
            svc.start()
            await asyncio.to_thread(svc.wait_ready, 90)

    await asyncio.gather(kill_twice(), *(work(c, case_of[c], n) for n, c in enumerate(case_of)))

    async with api_client(timeout=10) as client:
        for customer, case_id in case_of.items():
            case = await desk._get(client, case_id)
            assert case is not None and case["status"] == "resolved"
            types = [h["type"] for h in case["history"]]
            # each command took effect once, whatever was killed and retried
            assert types.count("crm.case.opened.v1") == 1
            assert types.count("crm.case.assigned.v1") == 1
            assert types.count("crm.case.status_changed.v1") == 2
            ids = {h["event_id"] for h in case["history"]}
            for _ in range(150):
                d = await digests(stack, customer, client)
                if len(set(d.values())) == 1 and ids <= set(
                    await timeline_ids(stack.services["analytics"].url, customer)
                ):
                    break
                await asyncio.sleep(0.2)
            assert len(set(d.values())) == 1, d
            for svc in stack.services.values():
                on_timeline = await timeline_ids(svc.url, customer)
                assert len(on_timeline) == len(set(on_timeline))
                assert ids <= set(on_timeline), svc.name
