"""notification's pure rules: templates, consent and channel choice, quiet hours, caps, digests, backoff."""

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.events import Preferences, QuietHours
from notification import domain
from notification.projections import deliverable

BOOK = domain.load_rulebook()
CAP = domain.Cap(3, timedelta(days=1))
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TOKYO = ZoneInfo("Asia/Tokyo")


def rule(name: str) -> domain.Rule:
    return next(r for r in BOOK.rules if r.name == name)


def profile(**kw: object) -> domain.Profile:
    base: dict[str, object] = {"known": True, "emails": ("ada@example.com",), "phones": ("+4915112345678",)}
    base.update(kw)
    return domain.Profile(**base)  # type: ignore[arg-type]


def test_rules_map_case_events_to_audiences() -> None:
    names = lambda t, d: [r.name for r in BOOK.matching(t, d)]  # noqa: E731
    assert names("crm.case.status_changed.v1", {"to_status": "resolved"}) == ["case_resolved"]
    assert names("crm.case.status_changed.v1", {"to_status": "pending"}) == ["case_status_changed"]
    assert names("crm.case.opened.v1", {}) == ["case_opened"]
    assert rule("sla_breached").audience == "staff" and rule("sla_breached").recipients == ("owner", "team")
    assert names("crm.interaction.recorded.v1", {}) == []


def test_templates_fall_back_to_base_then_default_language() -> None:
    data = {"case_id": "C-1", "reason": None}
    assert domain.render(BOOK, "case_resolved", "de", data).subject == "Ihr Fall C-1 ist gelöst"
    assert domain.render(BOOK, "case_resolved", "de-CH", data).language == "de"
    assert domain.render(BOOK, "case_resolved", "fr", data).language == "en"
    assert domain.render(BOOK, "sla_breached", "de", data).language == "en"  # staff templates exist in en only
    assert domain.render(BOOK, "case_resolved", None, {}).subject == "Your case  is resolved"  # missing -> blank


def test_service_critical_bypasses_marketing_consent_but_not_a_blocked_channel() -> None:
    no_marketing = profile(consent={("marketing", "*"): False})
    resolved = domain.decide_customer(rule("case_resolved"), no_marketing, NOON, 0, CAP)
    assert isinstance(resolved, domain.Schedule) and resolved.channel == "email"
    survey = domain.decide_customer(rule("followup_survey"), no_marketing, NOON, 0, CAP)
    assert survey == domain.Suppress("no_consent", "email")
    # Email blocked entirely: the critical message takes SMS; with both blocked it is suppressed.
    email_blocked = profile(consent={("service", "email"): False})
    assert domain.decide_customer(rule("case_resolved"), email_blocked, NOON, 0, CAP).channel == "sms"
    all_blocked = profile(consent={("service", "*"): False})
    assert domain.decide_customer(rule("case_resolved"), all_blocked, NOON, 0, CAP) == domain.Suppress(
        "blocked_channel", "email"
    )


def test_channel_specific_consent_wins_over_every_channel() -> None:
    p = profile(consent={("marketing", "*"): False, ("marketing", "sms"): True})
    decided = domain.decide_customer(rule("followup_survey"), p, NOON, 0, CAP)
    assert isinstance(decided, domain.Schedule) and decided.channel == "sms"


def test_preferred_channel_first_and_no_address() -> None:
    p = profile(preferences=Preferences(preferred_channel="sms"))
    assert domain.decide_customer(rule("case_opened"), p, NOON, 0, CAP).channel == "sms"
    assert domain.decide_customer(rule("case_opened"), profile(emails=(), phones=()), NOON, 0, CAP) == (
        domain.Suppress("no_address")
    )


def test_caps_stop_ordinary_messages_not_critical_ones() -> None:
    assert domain.decide_customer(rule("case_opened"), profile(), NOON, 3, CAP) == domain.Suppress("cap", "email")
    assert isinstance(domain.decide_customer(rule("case_resolved"), profile(), NOON, 3, CAP), domain.Schedule)


def test_quiet_hours_across_midnight_in_the_customers_zone() -> None:
    # 14:30 UTC is 23:30 in Tokyo (UTC+9): quiet until 07:00 Tokyo = 22:00 UTC the same UTC day.
    tokyo = QuietHours(start="22:00", end="07:00", time_zone="Asia/Tokyo")
    at = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    assert domain.quiet_hours_end(at, tokyo) == datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
    # 23:30 UTC is 08:30 Tokyo: not quiet.
    assert domain.quiet_hours_end(datetime(2026, 3, 2, 23, 30, tzinfo=UTC), tokyo) is None
    # After midnight local (02:00 Tokyo = 17:00 UTC): the same morning's end.
    assert domain.quiet_hours_end(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), tokyo) == datetime(
        2026, 3, 2, 22, 0, tzinfo=UTC
    )
    p = profile(preferences=Preferences(quiet_hours=tokyo))
    decided = domain.decide_customer(rule("case_resolved"), p, at, 0, CAP)
    assert decided == domain.Schedule(
        "email", "ada@example.com", datetime(2026, 3, 2, 22, 0, tzinfo=UTC), "quiet_hours"
    )


def test_quiet_hours_end_on_a_daylight_saving_change() -> None:
    # Berlin springs forward on 2026-03-29 at 02:00 (CET, +1) to 03:00 (CEST, +2).
    berlin = QuietHours(start="22:00", end="07:00", time_zone="Europe/Berlin")
    at = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET
    assert domain.quiet_hours_end(at, berlin) == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)  # 07:00 CEST
    day = QuietHours(start="01:00", end="02:30", time_zone="Europe/Berlin")  # 02:30 does not exist that night
    assert domain.quiet_hours_end(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), day) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


def test_not_before_then_quiet_hours() -> None:
    berlin = QuietHours(start="20:00", end="08:00", time_zone="Europe/Berlin")
    due = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # 21:00 in Berlin: quiet
    p = profile(consent={("marketing", "email"): True}, preferences=Preferences(quiet_hours=berlin))
    decided = domain.decide_customer(rule("followup_survey"), p, NOON, 0, CAP, not_before=due)
    assert decided == domain.Schedule("email", "ada@example.com", datetime(2026, 3, 3, 7, 0, tzinfo=UTC), "quiet_hours")


def test_staff_targets_and_duplicates() -> None:
    directory = domain.StaffDirectory({"agent-7": domain.StaffContact(email="a7@corp")}, "http://hook/team")
    data = {"owner": "agent-7", "team": "support"}
    targets = domain.staff_targets(rule("sla_breached"), data, directory)
    assert targets == [
        domain.StaffTarget("staff:owner:agent-7", "email", "a7@corp"),
        domain.StaffTarget("staff:team:support", "webhook", "http://hook/team"),
    ]
    unknown_owner = domain.staff_targets(rule("sla_breached"), {"owner": "bob", "team": "support"}, directory)
    assert domain.duplicates(unknown_owner) == {1}  # both fall back to the team webhook
    cap = domain.Cap(60, timedelta(hours=1))
    assert domain.decide_staff(targets[0], NOON, 59, cap, critical=False) == domain.Schedule("email", "a7@corp", NOON)
    assert domain.decide_staff(targets[0], NOON, 60, cap, critical=False) == domain.Suppress("cap", "email")


def test_a_critical_staff_message_is_never_capped() -> None:
    """An SLA breach reaches the owner and team however many warnings went to that address."""
    assert rule("sla_breached").critical and not rule("sla_warning").critical
    target = domain.StaffTarget("staff:team:support", "webhook", "http://hook/team")
    cap = domain.Cap(2, timedelta(hours=1))
    assert domain.decide_staff(target, NOON, 2, cap, critical=False) == domain.Suppress("cap", "webhook")
    for recent in (2, 3, 1000):
        decided = domain.decide_staff(target, NOON, recent, cap, critical=True)
        assert decided == domain.Schedule("webhook", "http://hook/team", NOON)
    # Without an address it is still not sent anywhere.
    nowhere = domain.StaffTarget("staff:owner:bob", None, None)
    assert domain.decide_staff(nowhere, NOON, 0, cap, critical=True) == domain.Suppress("no_address")


@given(st.integers(min_value=1, max_value=30), st.floats(min_value=0, max_value=1))
def test_backoff_grows_exponentially_within_jitter_and_cap(attempt: int, r: float) -> None:
    policy = domain.RetryPolicy(base=timedelta(seconds=1), max_delay=timedelta(seconds=60), jitter=0.2)
    delay = domain.retry_delay(policy, attempt, lambda: r)
    raw = min(60.0, 2.0 ** (attempt - 1))
    assert raw * 0.8 - 1e-6 <= delay.total_seconds() <= min(60.0, raw * 1.2) + 1e-6


def test_a_retry_falling_into_quiet_hours_waits_until_they_end() -> None:
    policy = domain.RetryPolicy(base=timedelta(seconds=60), max_delay=timedelta(minutes=10), jitter=0.2)
    tokyo = QuietHours(start="22:00", end="07:00", time_zone="Asia/Tokyo")
    # 12:59 UTC is 21:59 in Tokyo; the backoff after the first try is 48-72 s, so the retry lands
    # at 21:59:48-22:00:12 Tokyo: outside for the shortest jitter, inside for the longest.
    failed_at = datetime(2026, 3, 2, 12, 59, tzinfo=UTC)
    assert domain.retry_at(policy, 1, failed_at, lambda: 0.0, tokyo) == (failed_at + timedelta(seconds=48), None)
    morning = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 07:00 on 3 March in Tokyo
    assert domain.retry_at(policy, 1, failed_at, lambda: 1.0, tokyo) == (morning, "quiet_hours")
    # Inside quiet hours already: the next morning, whatever the backoff (the retry is not dropped).
    for attempt, r in ((1, 0.0), (3, 0.5), (6, 1.0)):
        rand = itertools.repeat(r).__next__
        assert domain.retry_at(policy, attempt, datetime(2026, 3, 2, 16, 0, tzinfo=UTC), rand, tokyo) == (
            morning,
            "quiet_hours",
        )
    # A retry that leaves quiet hours on its own goes at its own time; no quiet hours: the backoff.
    late = datetime(2026, 3, 2, 21, 59, 30, tzinfo=UTC)  # 06:59:30 in Tokyo, retry after 06:59:30 + 48 s
    assert domain.retry_at(policy, 1, late, lambda: 0.0, tokyo) == (late + timedelta(seconds=48), None)
    assert domain.retry_at(policy, 2, NOON, lambda: 0.5, None) == (NOON + timedelta(seconds=120), None)


@pytest.mark.parametrize("key", ["a|b|c", "case_resolved|e1|customer:c1"])
def test_notification_ids_are_stable(key: str) -> None:
    assert domain.notification_id_for(key) == domain.notification_id_for(key)
    assert domain.notification_id_for(key) != domain.notification_id_for(key + "x")


# --- digests -----------------------------------------------------------------------------------

DIGEST = domain.DigestPolicy(timedelta(hours=1))


def test_over_the_cap_ordinary_messages_go_into_the_windows_digest_critical_ones_go_at_once() -> None:
    at = NOON + timedelta(minutes=20)
    folded = domain.decide_customer(rule("case_opened"), profile(), at, 3, CAP, digest=DIGEST)
    assert folded == domain.ToDigest("email", "ada@example.com", NOON, NOON + timedelta(hours=1))
    under = domain.decide_customer(rule("case_opened"), profile(), at, 2, CAP, digest=DIGEST)
    assert isinstance(under, domain.Schedule) and under.deliver_at == at  # under the cap: no digest
    critical = domain.decide_customer(rule("case_resolved"), profile(), at, 99, CAP, digest=DIGEST)
    assert isinstance(critical, domain.Schedule) and critical.deliver_at == at
    off = domain.DigestPolicy(timedelta(hours=1), enabled=False)
    assert domain.decide_customer(rule("case_opened"), profile(), at, 3, CAP, digest=off) == domain.Suppress(
        "cap", "email"
    )
    # Consent still decides first: a survey without marketing consent is not digested either.
    no_marketing = profile(consent={("marketing", "*"): False})
    assert domain.decide_customer(rule("followup_survey"), no_marketing, at, 3, CAP, digest=DIGEST) == (
        domain.Suppress("no_consent", "email")
    )


def test_a_message_not_due_yet_goes_into_the_digest_of_its_own_window() -> None:
    later = NOON + timedelta(hours=5, minutes=10)
    p = profile(consent={("marketing", "*"): True})
    folded = domain.decide_customer(rule("followup_survey"), p, NOON, 3, CAP, later, DIGEST)
    assert isinstance(folded, domain.ToDigest)
    assert (folded.window_start, folded.deliver_at) == (NOON + timedelta(hours=5), NOON + timedelta(hours=6))


def test_digest_windows_are_fixed_slots_so_every_instance_agrees() -> None:
    window = timedelta(minutes=30)
    assert domain.digest_window(NOON + timedelta(minutes=29, seconds=59), window) == (
        NOON,
        NOON + timedelta(minutes=30),
    )
    assert domain.digest_window(NOON + timedelta(minutes=30), window)[0] == NOON + timedelta(minutes=30)
    assert domain.digest_key("customer:c1", NOON) == domain.digest_key("customer:c1", NOON.astimezone(TOKYO))
    assert domain.notification_id_for(domain.digest_key("customer:c1", NOON)) != domain.notification_id_for(
        domain.digest_key("customer:c1", NOON + window)
    )


def test_a_digest_due_in_quiet_hours_waits_until_they_end() -> None:
    quiet = QuietHours(start="22:00", end="07:00", time_zone="Asia/Tokyo")
    # The window 13:00-14:00 UTC ends at 23:00 in Tokyo: inside quiet hours until 07:00 (22:00 UTC).
    assert domain.digest_due(datetime(2026, 3, 2, 14, 0, tzinfo=UTC), quiet) == (
        datetime(2026, 3, 2, 22, 0, tzinfo=UTC),
        "quiet_hours",
    )
    assert domain.digest_due(NOON, quiet) == (NOON, None)  # 21:00 in Tokyo
    assert domain.digest_due(NOON, None) == (NOON, None)
    p = profile(preferences=Preferences(quiet_hours=quiet))
    folded = domain.decide_customer(rule("case_opened"), p, datetime(2026, 3, 2, 13, 5, tzinfo=UTC), 3, CAP,
                                    digest=DIGEST)  # fmt: skip
    assert isinstance(folded, domain.ToDigest) and folded.delayed_reason == "quiet_hours"
    assert folded.deliver_at == datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


def test_a_digest_lists_every_message_in_the_customers_language_with_fallback() -> None:
    items = [
        ("case_opened", {"case_id": "C-1", "team": "support"}),
        ("case_status_changed", {"case_id": "C-1", "to_status": "waiting"}),
        ("followup_survey", {"case_id": "C-2"}),
    ]
    de = domain.render_digest(BOOK, "de-AT", items)
    assert (de.language, de.subject) == ("de", "Ihre Neuigkeiten (3)")
    assert "Wir haben Ihr Anliegen erhalten (Fall C-1)" in de.body
    assert "Ihr Fall C-1 hat jetzt den Status waiting." in de.body
    assert "Wie zufrieden waren Sie? (Fall C-2)" in de.body
    assert de.body.index("Fall C-1)") < de.body.index("Status waiting") < de.body.index("C-2")  # oldest first
    fr = domain.render_digest(BOOK, "fr", items)  # no French: the default language throughout
    assert (fr.language, fr.subject) == ("en", "Your updates (3)")
    assert "We received your request (case C-1)" in fr.body and "How did we do? (case C-2)" in fr.body
    assert domain.render_digest(BOOK, None, items[:1]).subject == "Your updates (1)"


def test_a_rulebook_without_a_digest_section_uses_the_built_in_default() -> None:
    book = domain.RuleBook.model_validate(
        {
            "rules": [{"name": "r", "event": "e", "audience": "customer"}],
            "templates": {"r": {"en": {"subject": "s", "body": "b"}}},
        }
    ).check()
    assert domain.render_digest(book, "de", [("r", {})]).subject == "Your updates (1)"
    with pytest.raises(ValueError, match="reserved"):
        domain.RuleBook.model_validate(
            {
                "rules": [{"name": "digest", "event": "e", "audience": "customer"}],
                "templates": {"digest": {"en": {"subject": "s", "body": "b"}}},
            }
        ).check()


# --- identity trust (docs/identity-trust.md): which addresses messages may go to -----------------


def test_only_verified_or_self_used_addresses_are_deliverable() -> None:
    assert deliverable({"trust": "verified"})
    assert deliverable({"trust": "claimed", "inbound": True})  # the customer wrote in from it
    assert not deliverable({"trust": "claimed", "inbound": False})  # a channel said so
    assert not deliverable({"trust": "claimed"})  # identifiers_added: a claim on an existing customer
    assert deliverable({})  # an event from before trust existed: trusted, as it was
