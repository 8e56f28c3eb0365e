"""Retries, Retry-After, 308s and typed errors, for Client and AsyncClient alike, against
httpx.MockTransport: the answers a real stack gives only under outage or overload, made on demand.
(tests/e2e/test_client.py meets a real 503 while the database is away.)"""

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import crm_client.client as client_module
import httpx
import pytest
from crm_client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    RateLimited,
    Retry,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from crm_client._core import retry_after

Handler = Callable[[httpx.Request], httpx.Response]
ACCEPTED = {"event_id": "e1", "customer_id": "c1", "event_ids": ["e1"]}
PAGE = {"customer_id": "c2", "events": [], "next_before": None}
INTERACTION = {
    "customer": {"email": "a@example.com"},
    "channel": "web",
    "direction": "inbound",
    "kind": "purchase",
    "occurred_at": datetime(2026, 12, 7, tzinfo=UTC),
}


def error(status: int, code: str, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": code.replace("_", " "), **extra}, headers=headers)


class Script:
    """Answers in order, and what was asked."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(client_module, "_sleep", slept.append)
    monkeypatch.setattr(client_module, "_asleep", asleep)
    yield slept


def call(kind: str, script: Script, method: str, /, *args: Any, retry: Retry | None = None, **kwargs: Any) -> Any:
    """`method` on a Client or an AsyncClient (kind) whose every request `script` answers."""
    if kind == "sync":
        with Client(
            "http://intake", "k", case_url="http://case", retry=retry, transport=httpx.MockTransport(script)
        ) as c:
            return getattr(c, method)(*args, **kwargs)

    async def run() -> Any:
        async with AsyncClient(
            "http://intake", "k", case_url="http://case", retry=retry, transport=httpx.MockTransport(script)
        ) as c:
            return await getattr(c, method)(*args, **kwargs)

    return asyncio.run(run())


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


@KINDS
def test_503_then_202_retries_with_the_same_idempotency_key_after_retry_after(kind: str, waits: list[float]) -> None:
    script = Script(error(503, "unavailable", {"Retry-After": "2"}), httpx.Response(202, json=ACCEPTED))
    accepted = call(kind, script, "record_interaction", **INTERACTION)
    assert accepted.event_id == "e1"
    keys = [r.headers["Idempotency-Key"] for r in script.requests]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert script.requests[0].content == script.requests[1].content
    assert b'"occurred_at":"2026-12-07T00:00:00+00:00"' in script.requests[0].content
    assert script.requests[0].headers["Authorization"] == "Bearer k"
    assert 2 <= waits[0] <= 2 + Retry().backoff  # Retry-After, plus jitter


@KINDS
def test_retry_after_as_an_http_date_is_honoured(kind: str, waits: list[float]) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    script = Script(error(429, "rate_limited", {"Retry-After": when}), httpx.Response(202, json=ACCEPTED))
    call(kind, script, "record_interaction", **INTERACTION)
    assert 17 <= waits[0] <= 20 + Retry().backoff


@KINDS
def test_without_retry_after_the_waits_grow_exponentially_then_the_error_is_raised(
    kind: str, waits: list[float]
) -> None:
    script = Script(*[error(503, "unavailable") for _ in range(5)])
    policy = Retry(attempts=5, backoff=1, max_backoff=4)
    with pytest.raises(Unavailable) as raised:
        call(kind, script, "timeline", "c1", retry=policy)
    assert raised.value.error == "unavailable" and raised.value.status == 503
    assert len(script.requests) == 5
    # 1, 2, 4, 4 (capped), each between half and all of it
    for wait, cap in zip(waits, [1, 2, 4, 4], strict=True):
        assert cap / 2 <= wait <= cap


@KINDS
def test_a_retry_after_beyond_the_cap_is_not_waited_for(kind: str, waits: list[float]) -> None:
    script = Script(error(429, "rate_limited", {"Retry-After": "120"}))
    with pytest.raises(RateLimited) as raised:
        call(kind, script, "timeline", "c1")
    assert raised.value.retry_after == 120
    assert waits == [] and len(script.requests) == 1


@KINDS
def test_connection_errors_are_retried_for_idempotent_calls(kind: str, waits: list[float]) -> None:
    script = Script(
        httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(202, json={"items": [ACCEPTED]})
    )
    accepted = call(kind, script, "record_batch", [INTERACTION])
    assert [a.customer_id for a in accepted] == ["c1"]
    assert len({r.headers["Idempotency-Key"] for r in script.requests}) == 1
    assert len(waits) == 2


@KINDS
def test_a_case_command_is_not_retried_once_it_may_have_been_applied(kind: str, waits: list[float]) -> None:
    script = Script(httpx.ReadTimeout("sent, no answer"))
    with pytest.raises(ConnectionFailed):
        call(kind, script, "assign", "k1", "ana", version=3)
    assert len(script.requests) == 1 and waits == []
    # ...but it is when it surely was not: no connection, or a 503
    script = Script(httpx.ConnectError("refused"), error(503, "unavailable"), httpx.Response(200, json=None))
    with pytest.raises(Exception):  # noqa: B017 - the body is not a case; what counts is the three tries
        call(kind, script, "assign", "k1", "ana", version=3)
    assert len(script.requests) == 3
    assert all(r.headers["If-Match"] == '"3"' for r in script.requests)
    assert all(str(r.url) == "http://case/v1/cases/k1/assign" for r in script.requests)


@KINDS
def test_gives_up_with_connection_failed_after_the_attempts(kind: str, waits: list[float]) -> None:
    script = Script(*[httpx.ConnectError("refused") for _ in range(4)])
    with pytest.raises(ConnectionFailed) as raised:
        call(kind, script, "customer", "c1")
    assert isinstance(raised.value, Unavailable) and raised.value.error == "connection_error"
    assert len(script.requests) == Retry().attempts


@KINDS
def test_a_merged_ids_308_is_followed_with_its_query(kind: str, waits: list[float]) -> None:
    moved = httpx.Response(308, headers={"Location": "/v1/customers/c2/timeline?limit=50&wait_for=e1"})
    script = Script(moved, httpx.Response(200, json=PAGE))
    page = call(kind, script, "timeline", "c1", wait_for="e1")
    assert page.customer_id == "c2"
    assert [str(r.url) for r in script.requests] == [
        "http://intake/v1/customers/c1/timeline?limit=50&wait_for=e1",
        "http://intake/v1/customers/c2/timeline?limit=50&wait_for=e1",
    ]


@KINDS
def test_a_308_where_none_is_expected_is_an_error_not_a_second_post(kind: str, waits: list[float]) -> None:
    script = Script(httpx.Response(308, headers={"Location": "/elsewhere"}))
    with pytest.raises(Exception) as raised:
        call(kind, script, "record_interaction", **INTERACTION)
    assert getattr(raised.value, "status", None) == 308 and len(script.requests) == 1


@KINDS
def test_422_is_validation_failed_with_each_field(kind: str, waits: list[float]) -> None:
    script = Script(
        error(422, "validation_failed", errors=[{"field": "body.channel", "reason": "not a channel"}]),
    )
    with pytest.raises(ValidationFailed) as raised:
        call(kind, script, "record_interaction", **{**INTERACTION, "channel": "pigeon"})
    assert raised.value.error == "validation_failed"
    assert [(e.field, e.reason) for e in raised.value.errors] == [("body.channel", "not a channel")]
    assert waits == []


@KINDS
def test_409_illegal_transition_says_where_it_may_go(kind: str, waits: list[float]) -> None:
    script = Script(error(409, "illegal_transition", current_status="closed", allowed=[]))
    with pytest.raises(Conflict) as raised:
        call(kind, script, "change_status", "k1", "open", version=7)
    assert (raised.value.error, raised.value.current_status, raised.value.allowed) == (
        "illegal_transition",
        "closed",
        [],
    )


@KINDS
def test_504_wait_timeout_carries_the_page_anyway(kind: str, waits: list[float]) -> None:
    script = Script(httpx.Response(504, json={**PAGE, "error": "wait_timeout", "message": "not yet"}))
    with pytest.raises(WaitTimeout) as raised:
        call(kind, script, "timeline", "c1", wait_for="e9", timeout_ms=100)
    assert raised.value.timeline.customer_id == "c2" and waits == []


def test_case_calls_need_the_case_url() -> None:
    with Client("http://intake", "k") as c, pytest.raises(ValueError, match="case_url"):
        c.case("k1")


def test_retry_after_reads_seconds_and_dates() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert retry_after("3", now) == 3
    assert retry_after("Mon, 07 Dec 2026 12:00:05 GMT", now) == 5
    assert retry_after("Mon, 07 Dec 2026 11:00:00 GMT", now) == 0  # in the past: now
    assert retry_after("soon", now) is None and retry_after(None, now) is None
