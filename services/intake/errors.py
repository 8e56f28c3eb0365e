"""The one place where intake's domain errors become HTTP answers.

The domain says what is wrong with the input (InvalidInput, TooLarge); which status that is,
and the error's name in the body, are the edge's business: 413 content_too_large for input
larger than intake keeps, 422 validation_failed for the rest, with the field and the reason.
"""

from typing import Any

from servicekit.http import ApiError

from intake.domain import InvalidInput, TooLarge


def invalid(exc: InvalidInput, index: int | None = None) -> ApiError:
    """The 4xx for one invalid input; `index`: the item of a batch it is about."""
    error: dict[str, Any] = {"field": exc.field, "reason": exc.reason}
    if index is not None:
        error = {"index": index, **error}
    if isinstance(exc, TooLarge):
        return ApiError(413, "content_too_large", str(exc), errors=[error])
    return ApiError(422, "validation_failed", str(exc), errors=[error])
