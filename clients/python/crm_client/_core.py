"""The client without I/O: what to send, whether and when to try again, what an answer means.

`conduct` is a generator that yields `Send` and `Sleep` steps and is sent back each answer (an
`httpx.Response` or the `httpx.TransportError` raised instead); `Client` runs it with blocking
calls, `AsyncClient` with awaits. Both therefore build the same requests, retry the same way and
raise the same errors: there is one implementation of all of it.
"""

import random
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from crm_client import errors
from crm_client.models import FieldError, Timeline

T = TypeVar("T")
Service = Literal["intake", "case", "notification", "analytics"]
# always: idempotent (a GET, a PUT, a POST with an idempotency key or a client-chosen id), so any
# failure may be retried. unsent: a command that is not safe to repeat blindly (a case command
# guarded by the case version, a campaign's pause/resume/cancel); retried only when it surely did
# not take effect (no connection made, 429, 503).
RetryWhen = Literal["always", "unsent"]
RETRY_STATUSES = frozenset({429, 503})
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API operation, ready to send."""

    operation_id: str  # as in contracts/openapi/<service>.json; a test checks method and path
    service: Service
    method: str
    path_template: str
    parse: Callable[[Any], T]
    path_params: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry: RetryWhen = "always"
    follow_308: bool = False  # a merged customer's id answers 308 with the survivor's URL
    extra_timeout_s: float = 0.0  # time the server may take on purpose (wait_for)
    text: bool = False  # parse the body as text (a CSV report), not JSON

    @property
    def path(self) -> str:
        return self.path_template.format(**{k: quote(v, safe="") for k, v in self.path_params.items()})


@dataclass(frozen=True)
class Retry:
    """How often and how long to try again on 429, 503 and connection errors.

    The n-th wait is `backoff * 2**(n-1)`, capped at `max_backoff`, half of it random (jitter, so
    many clients do not come back at once). A `Retry-After` answer is honoured instead (plus up to
    `backoff` of jitter); one longer than `max_retry_after` is not waited for: the error is raised.
    """

    attempts: int = 4  # tries in all, the first included
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 30.0


@dataclass(frozen=True)
class Send:
    method: str
    url: str
    params: Mapping[str, Any] | None
    json: Any
    headers: Mapping[str, str]
    timeout: float


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Outcome = httpx.Response | httpx.TransportError | None


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    call: Call[Any], attempt: int, outcome: httpx.Response | httpx.TransportError, policy: Retry, rng: random.Random
) -> float | None:
    """How long to wait before try number `attempt + 1`, or None not to try again."""
    if attempt >= policy.attempts:
        return None
    if isinstance(outcome, httpx.Response):
        if outcome.status_code not in RETRY_STATUSES:
            return None
        asked = retry_after(outcome.headers.get("retry-after"), datetime.now(UTC))
        if asked is not None:
            return None if asked > policy.max_retry_after else asked + rng.uniform(0, policy.backoff)
    elif call.retry == "unsent" and not isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout):
        return None  # it may have been applied: the caller must look before trying again
    wait = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
    return wait / 2 + rng.uniform(0, wait / 2)


def conduct(
    call: Call[T], base_url: str, default_headers: Mapping[str, str], timeout: float, policy: Retry, rng: random.Random
) -> Generator[Step, Outcome, T]:
    """Send `call`, following 308s where it may and retrying as `policy` says; its result or error."""
    url = base_url.rstrip("/") + call.path
    params: Mapping[str, Any] | None = call.params
    headers = {**default_headers, **call.headers}
    attempt = hops = 0
    while True:
        outcome = yield Send(call.method, url, params, call.json, headers, timeout + call.extra_timeout_s)
        assert outcome is not None
        if isinstance(outcome, httpx.Response) and outcome.status_code == 308 and call.follow_308:
            location = outcome.headers.get("location")
            if location and hops < MAX_REDIRECTS:
                # the Location keeps the query (wait_for, limit...): send it as it is
                url, params, hops = str(outcome.url.join(location)), None, hops + 1
                continue
        attempt += 1
        delay = retry_delay(call, attempt, outcome, policy, rng)
        if delay is None:
            if isinstance(outcome, httpx.TransportError):
                reason = f"{type(outcome).__name__}: {outcome}"
                raise errors.ConnectionFailed(None, "connection_error", reason) from outcome
            return answer(call, outcome)
        yield Sleep(delay)


def answer(call: Call[T], response: httpx.Response) -> T:
    """The result of a 2xx answer, or the typed error of any other."""
    status = response.status_code
    if call.text and 200 <= status < 300:
        return call.parse(response.text)
    try:
        body = response.json()
    except ValueError:
        body = None
    if 200 <= status < 300:
        return call.parse(body)
    doc: dict[str, Any] = body if isinstance(body, dict) else {}
    code = str(doc.get("error") or f"http_{status}")
    message = str(doc.get("message") or response.reason_phrase or "")
    if status == 504 and code == "wait_timeout":
        page = Timeline.model_validate({k: doc[k] for k in ("customer_id", "events", "next_before") if k in doc})
        raise errors.WaitTimeout(message, page, doc)
    field_errors = [FieldError.model_validate(e) for e in doc.get("errors") or [] if isinstance(e, dict)]
    kind = errors.BY_STATUS.get(status, errors.CrmError)
    raise kind(
        status,
        code,
        message,
        field_errors,
        doc,
        retry_after(response.headers.get("retry-after"), datetime.now(UTC)),
    )
