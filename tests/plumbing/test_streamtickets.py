"""Stream tickets (servicekit.streamtickets): signed, bound, short-lived, single use."""

import base64
from collections.abc import Callable

import orjson
import pytest
from servicekit.streamtickets import StreamTickets, TicketRefused


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def case(clock: Clock) -> StreamTickets:
    return StreamTickets("case", "shared secret", ttl_s=60, clock=clock)


def test_a_fresh_ticket_names_its_key_once(case: StreamTickets) -> None:
    ticket = case.issue("key1", "cust-a")
    assert case.redeem(ticket, "cust-a") == "key1"
    with pytest.raises(TicketRefused, match="used already"):
        case.redeem(ticket, "cust-a")


def test_a_ticket_is_for_one_customer(case: StreamTickets) -> None:
    ticket = case.issue("key1", "cust-a")
    with pytest.raises(TicketRefused, match="another customer"):
        case.redeem(ticket, "cust-b")
    assert case.redeem(ticket, "cust-a") == "key1"  # a refused try does not use it up


def test_a_ticket_expires(case: StreamTickets, clock: Clock) -> None:
    ticket = case.issue("key1", "cust-a")
    clock.now += 59
    later = case.issue("key1", "cust-a")
    assert case.redeem(ticket, "cust-a") == "key1"
    clock.now += 1  # 60 s after the first ticket, 1 s after the second
    with pytest.raises(TicketRefused, match="expired"):
        case.redeem(case.issue("key1", "cust-a", expires_at=clock.now), "cust-a")
    assert case.redeem(later, "cust-a") == "key1"


def test_a_ticket_is_for_the_service_that_issued_it(clock: Clock) -> None:
    case = StreamTickets("case", "shared secret", clock=clock)
    intake = StreamTickets("intake", "shared secret", clock=clock)
    with pytest.raises(TicketRefused, match="not for this service"):
        intake.redeem(case.issue("key1", "cust-a"), "cust-a")


def test_replicas_sharing_the_secret_accept_each_others_tickets(clock: Clock) -> None:
    one = StreamTickets("case", "shared secret", clock=clock)
    two = StreamTickets("case", "shared secret", clock=clock)
    assert two.redeem(one.issue("key1", "cust-a"), "cust-a") == "key1"


def test_without_a_configured_secret_each_process_has_its_own(clock: Clock) -> None:
    one = StreamTickets("case", None, clock=clock)
    two = StreamTickets("case", None, clock=clock)
    ticket = one.issue("key1", "cust-a")
    with pytest.raises(TicketRefused, match="not a stream ticket issued by this service"):
        two.redeem(ticket, "cust-a")
    assert one.redeem(ticket, "cust-a") == "key1"


def forged(ticket: str, **changes: object) -> str:
    payload, mac = ticket.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode() + "." + mac


@pytest.mark.parametrize(
    ("make", "customer"),
    [
        (lambda t: forged(t, cid="cust-b"), "cust-b"),
        (lambda t: forged(t, sub="admin-key"), "cust-a"),
        (lambda t: forged(t, exp=2_000_000_000), "cust-a"),
        (lambda t: forged(t, use="export"), "cust-a"),
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "cust-a"),
        (lambda t: t.split(".")[0], "cust-a"),
        (lambda t: "", "cust-a"),
        (lambda t: "a.b.c", "cust-a"),
        (lambda t: "x" * 5000, "cust-a"),
    ],
)
def test_forged_or_broken_tickets_are_refused(case: StreamTickets, make: Callable[[str], str], customer: str) -> None:
    with pytest.raises(TicketRefused):
        case.redeem(make(case.issue("key1", "cust-a")), customer)


def test_another_secret_signs_tickets_nobody_here_accepts(case: StreamTickets, clock: Clock) -> None:
    other = StreamTickets("case", "guessed secret", clock=clock)
    with pytest.raises(TicketRefused, match="not a stream ticket issued"):
        case.redeem(other.issue("key1", "cust-a"), "cust-a")


def test_used_tickets_are_forgotten_once_expired(case: StreamTickets, clock: Clock) -> None:
    for n in range(2000):
        case.redeem(case.issue("key1", f"c{n}"), f"c{n}")
    clock.now += 61
    case.redeem(case.issue("key1", "again"), "again")
    assert len(case._used) == 1
