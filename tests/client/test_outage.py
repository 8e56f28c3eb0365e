"""A real 503: intake answers `503 unavailable` with Retry-After while its database is away; the
client waits and tries again with the same idempotency key until it is back, and the interaction
is recorded once. On a stack of its own (intake alone), so stopping PostgreSQL disturbs no other test."""

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from crm_client import AsyncClient, Client, Retry
from crmtools.devstack import Stack

from tests.conftest import ADMIN_KEY, running_stack

pytestmark = pytest.mark.e2e
# Enough tries at up to 2 s each for PostgreSQL to start again and intake's pool to reconnect.
PATIENT = Retry(attempts=60, backoff=0.2, max_backoff=2, max_retry_after=5)


@pytest.fixture(scope="module")
def intake_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("client-outage"), {}, services=["intake"]) as s:
        yield s


class Watch:
    """Passes requests through and notes each answer; `met_503` is set at the first 503."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str | None, str | None]] = []
        self.met_503 = threading.Event()

    def saw(self, request: httpx.Request, response: httpx.Response) -> None:
        self.answers.append(
            (response.status_code, response.headers.get("retry-after"), request.headers.get("idempotency-key"))
        )
        if response.status_code == 503:
            self.met_503.set()

    def assert_rode_out_the_outage(self) -> None:
        statuses = [status for status, _, _ in self.answers]
        assert statuses[0] == 503 and statuses[-1] == 202, statuses
        assert set(statuses) <= {202, 503}
        assert all(after == "1" for status, after, _ in self.answers if status == 503)  # said when to come back
        assert len({key for _, _, key in self.answers}) == 1  # every try the same request


class SyncWatch(httpx.HTTPTransport):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self.watch = watch

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        self.watch.saw(request, response)
        return response


class AsyncWatch(httpx.AsyncHTTPTransport):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self.watch = watch

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        await response.aread()
        self.watch.saw(request, response)
        return response


def interaction(tag: str) -> dict[str, object]:
    return {
        "customer": {"email": f"outage-{tag}@example.com"},
        "channel": "web",
        "direction": "inbound",
        "kind": "purchase",
        "occurred_at": datetime.now(UTC),
    }


def restart_after_the_first_503(stack: Stack, watch: Watch) -> None:
    """Start the database again once the client has met the outage (here, in the thread that
    stops it: the server is bound to the life of the thread that starts it)."""
    try:
        assert watch.met_503.wait(60), "no 503 while the database was away"
    finally:
        stack.postgres.start()
        stack.services["intake"].wait_ready()


def test_the_client_rides_out_a_database_outage_and_records_once(intake_stack: Stack) -> None:
    url = intake_stack.services["intake"].url
    watch = Watch()
    intake_stack.postgres.stop()
    with ThreadPoolExecutor(1) as pool, Client(url, ADMIN_KEY, retry=PATIENT, transport=SyncWatch(watch)) as client:
        recording = pool.submit(client.record_interaction, **interaction("sync"))
        restart_after_the_first_503(intake_stack, watch)
        accepted = recording.result()
    watch.assert_rode_out_the_outage()
    with Client(url, ADMIN_KEY) as client:
        page = client.timeline(accepted.customer_id, wait_for=accepted.event_id, timeout_ms=10_000)
    assert [e.event_id for e in page.events if e.type == "crm.interaction.recorded.v1"] == [accepted.event_id]


async def test_the_async_client_too(intake_stack: Stack) -> None:
    url = intake_stack.services["intake"].url
    watch = Watch()
    intake_stack.postgres.stop()
    async with AsyncClient(url, ADMIN_KEY, retry=PATIENT, transport=AsyncWatch(watch)) as client:
        recording = asyncio.create_task(client.record_interaction(**interaction("async")))
        await asyncio.to_thread(watch.met_503.wait, 60)
        # blocking the loop while the database starts: the client is only waiting to try again
        restart_after_the_first_503(intake_stack, watch)
        accepted = await recording
    watch.assert_rode_out_the_outage()
    async with AsyncClient(url, ADMIN_KEY) as client:
        page = await client.timeline(accepted.customer_id, wait_for=accepted.event_id, timeout_ms=10_000)
    assert [e.event_id for e in page.events if e.type == "crm.interaction.recorded.v1"] == [accepted.event_id]
