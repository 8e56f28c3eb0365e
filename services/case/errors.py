"""The one place where case's domain errors become HTTP answers.

The domain says what went wrong (not found, conflicts with the case as it is, invalid input);
the status code is the edge's business. The body keeps the error's name and details:
{"error", "message", ...extra} (extra: errors, allowed, current_status).
"""

from servicekit.http import ApiError

from case.domain import CommandRejected, Conflict, Invalid, NotFound

_STATUS: tuple[tuple[type[CommandRejected], int], ...] = ((NotFound, 404), (Conflict, 409), (Invalid, 422))


def api_error(exc: CommandRejected) -> ApiError:
    """The 4xx for a rejected command (422 for a kind not listed: the input did not pass)."""
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 422)
    return ApiError(status, exc.error, str(exc), **exc.extra)
