"""Domain errors carry no HTTP status: errors.py alone decides it, with the body agents always got."""

import pytest

from case import domain
from case.errors import api_error


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (domain.NotFound("interaction_not_found", "no such interaction"), 404),
        (domain.Conflict("no_change", "already so"), 409),
        (domain.IllegalTransition("closed", "open"), 409),
        (domain.Invalid("priority_below_vip_minimum", "VIP", errors=[{"field": "priority", "reason": "r"}]), 422),
    ],
)
def test_each_kind_of_rejection_has_one_status(exc: domain.CommandRejected, status: int) -> None:
    err = api_error(exc)
    assert err.status == status
    assert err.body == {"error": exc.error, "message": str(exc), **exc.extra}


def test_an_illegal_transition_names_the_allowed_ones_in_the_body() -> None:
    body = api_error(domain.IllegalTransition("resolved", "pending")).body
    assert body["error"] == "illegal_transition"
    assert (body["current_status"], body["allowed"]) == ("resolved", ["closed", "open"])
