"""Domain errors carry no HTTP status: errors.py alone decides it, with the body callers always got."""

from intake import domain
from intake.errors import invalid


def test_input_too_large_is_413_content_too_large() -> None:
    err = invalid(domain.TooLarge("content", "longer than 10000 characters"))
    assert err.status == 413
    assert err.body == {
        "error": "content_too_large",
        "message": "content: longer than 10000 characters",
        "errors": [{"field": "content", "reason": "longer than 10000 characters"}],
    }


def test_other_invalid_input_is_422_validation_failed_and_names_the_batch_item() -> None:
    err = invalid(domain.InvalidInput("customer.email", "not an email address"), index=3)
    assert err.status == 422
    assert err.body == {
        "error": "validation_failed",
        "message": "customer.email: not an email address",
        "errors": [{"index": 3, "field": "customer.email", "reason": "not an email address"}],
    }
