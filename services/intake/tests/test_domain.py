"""Intake's pure rules, no I/O."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake import domain

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Ada@Example.COM", "ada@example.com"), ("  bob@example.org\n", "bob@example.org")],
)
def test_emails_are_normalised(raw: str, expected: str) -> None:
    assert domain.normalise_email(raw) == domain.Ident("email", expected)


@pytest.mark.parametrize("raw", ["", "no-at-sign", "a@b", "two@@example.com", "sp ace@example.com"])
def test_invalid_emails_name_the_field(raw: str) -> None:
    with pytest.raises(domain.InvalidInput) as info:
        domain.normalise_email(raw)
    assert info.value.field == "customer.email"


@pytest.mark.parametrize("field", ["customer.email", "query.email"])
def test_a_remembered_address_gets_the_same_answer_under_each_field(field: str) -> None:
    for _ in range(2):  # the second answer comes from the cache of checked addresses
        assert domain.normalise_email("Eve@Example.COM", field) == domain.Ident("email", "eve@example.com")
        with pytest.raises(domain.InvalidInput) as info:
            domain.normalise_email("eve@@example.com", field)
        assert info.value.field == field and info.value.reason.startswith("not an email address: ")


@given(st.emails())
def test_normalising_is_idempotent_and_case_blind(email: str) -> None:
    once = domain.normalise_email(email)
    assert domain.normalise_email(once.value) == once
    assert domain.normalise_email(f"  {email.upper()} ") == once


def cmd_at(occurred_at: datetime, content: str | None = None) -> domain.RecordInteraction:
    return domain.RecordInteraction(
        channel="web", direction="inbound", kind="message", occurred_at=occurred_at, customer_id="c", content=content
    )


def test_occurred_at_may_be_a_little_ahead_but_not_far() -> None:
    domain.check_interaction(cmd_at(NOW + timedelta(minutes=4, seconds=59)), NOW)
    domain.check_interaction(cmd_at(NOW - timedelta(days=3650)), NOW)
    with pytest.raises(domain.InvalidInput) as info:
        domain.check_interaction(cmd_at(NOW + timedelta(minutes=5, seconds=1)), NOW)
    assert info.value.field == "occurred_at" and not isinstance(info.value, domain.TooLarge)


def test_content_over_the_limit_is_too_large() -> None:
    domain.check_interaction(cmd_at(NOW, "x" * domain.MAX_CONTENT_CHARS), NOW)
    with pytest.raises(domain.TooLarge) as info:
        domain.check_interaction(cmd_at(NOW, "x" * (domain.MAX_CONTENT_CHARS + 1)), NOW)
    assert info.value.field == "content"


def test_interaction_payload_matches_the_contract() -> None:
    cmd = domain.RecordInteraction(
        channel="sms", direction="inbound", kind="complaint", occurred_at=NOW, content="late delivery"
    )
    data = domain.interaction_recorded("c-1", cmd)
    assert data == {
        "customer_id": "c-1",
        "channel": "sms",
        "direction": "inbound",
        "kind": "complaint",
        "occurred_at": "2026-06-01T12:00:00Z",
        "content": "late delivery",
        "metadata": {},
        "sealed": None,  # the domain builds the clear payload; the handler seals it (docs/product.md §9)
    }


@pytest.mark.parametrize(
    "raw",
    [
        "a()@x.io",  # comments are not addresses: one mailbox must not have two spellings
        "a\x00b@x.io",
        "a\x01b@x.io",
        "a@x.io\x00",
        "a\u200b@x.io",  # zero-width space
        "a@[1.2.3.4]",
        "a@localhost",
        "a..b@x.io",
        '"a b"@x.io',
        "a\ud800@x.io",
    ],
)
def test_email_validator_refuses_what_is_not_one_mailbox(raw: str) -> None:
    with pytest.raises(domain.InvalidInput) as info:
        domain.normalise_email(raw, "query.email")
    assert info.value.field == "query.email"
    assert info.value.reason.startswith("not an email address")


def test_a_unicode_domain_and_its_idna_spelling_are_one_identity() -> None:
    assert domain.normalise_email("Ana@XN--MNCHEN-3YA.de") == domain.normalise_email("ana@münchen.de")
    assert domain.normalise_email("ana@münchen.de").value == "ana@xn--mnchen-3ya.de"  # the ASCII spelling
