"""Typed errors: one class per kind of answer, each carrying the API's machine-readable `error` code.

Every error answer of the API has the shape `{"error", "message", "errors": [{"field", "reason"}]}`
(some say more: `required` scopes on 403, `index` of a batch item, `current_status` and `allowed`
transitions on 409 illegal_transition); `body` keeps all of it.
"""

from typing import Any

from crm_client.models import FieldError


class CrmError(Exception):
    """An answer the client could not turn into a result."""

    def __init__(
        self,
        status: int | None,
        error: str,
        message: str,
        errors: list[FieldError] | None = None,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status or 'no answer'} {error}: {message}")
        self.status = status
        self.error = error  # the API's code, e.g. validation_failed, illegal_transition
        self.message = message
        self.errors = errors or []  # one entry per bad field (validation errors)
        self.body = body or {}
        self.retry_after = retry_after  # seconds, from the Retry-After header


class BadRequest(CrmError):
    """400: the request was not valid JSON (or an If-Match was not a version)."""


class Unauthorized(CrmError):
    """401: no API key, or not a valid one (unknown or revoked)."""


class Forbidden(CrmError):
    """403: the key lacks the scope; `required` names the ones that would do."""

    @property
    def required(self) -> list[str]:
        return list(self.body.get("required") or [])


class NotFound(CrmError):
    """404."""


class Conflict(CrmError):
    """409: an idempotency key reused for another request, a stale case version, an illegal
    transition (`current_status`, `allowed`)..."""

    @property
    def current_status(self) -> str | None:
        # case names it current_status, notification (a campaign's transition) current
        found = self.body.get("current_status", self.body.get("current"))
        return None if found is None else str(found)

    @property
    def allowed(self) -> list[str]:
        return list(self.body.get("allowed") or [])


class Gone(CrmError):
    """410: e.g. customer_erased, no new personal data is kept."""


class PayloadTooLarge(CrmError):
    """413: content, body or the event it makes too large."""


class ValidationFailed(CrmError):
    """422: `errors` names each field and why."""


class PreconditionRequired(CrmError):
    """428: a case command without the case version it was decided on."""


class RateLimited(CrmError):
    """429, after the client's retries: too many requests for this key."""


class Unavailable(CrmError):
    """503, after the client's retries: storage or a service it needs is unavailable."""


class ConnectionFailed(Unavailable):
    """No answer at all (connection refused, reset, timed out), after the client's retries."""


class WaitTimeout(CrmError):
    """504 on a timeline read with wait_for: the event was not applied within timeout_ms.

    `timeline` is the page as it was anyway.
    """

    def __init__(self, message: str, timeline: Any, body: dict[str, Any]) -> None:
        super().__init__(504, "wait_timeout", message, body=body)
        self.timeline = timeline


BY_STATUS: dict[int, type[CrmError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: ValidationFailed,
    428: PreconditionRequired,
    429: RateLimited,
    503: Unavailable,
}
