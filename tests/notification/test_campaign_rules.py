"""Campaigns, the pure part: validation, status changes, counts, and which events are on no timeline."""

from datetime import UTC, datetime, timedelta

import pytest
from eventkit.envelope import new_event
from notification import campaign_store, campaigns, domain
from servicekit.timeline import on_timeline

from contracts import notification as n
from contracts.analytics import CAMPAIGN_AUDIENCE_RESOLVED

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def _templates(**langs: tuple[str, str]) -> dict[str, n.CampaignTemplate]:
    return {lang: n.CampaignTemplate(subject=s, body=b) for lang, (s, b) in langs.items()}


def test_a_valid_campaign_has_no_errors() -> None:
    templates = _templates(en=("Hello {customer_id}", "{campaign_name}: news"), de=("Hallo", "Neues"))
    assert campaigns.validate(n.CampaignAudience(segment="vip"), templates, NOW + timedelta(hours=1), NOW, "en") == []


def test_unknown_placeholder_is_named_with_its_field() -> None:
    errors = campaigns.validate(n.CampaignAudience(), _templates(en=("Hi {first_name}", "x")), None, NOW, "en")
    assert [f for f, _ in errors] == ["templates.en.subject"]
    assert "{first_name}" in errors[0][1]


def test_malformed_placeholder_is_refused() -> None:
    errors = campaigns.validate(n.CampaignAudience(), _templates(en=("Hi", "{customer_id!r}")), None, NOW, "en")
    assert [f for f, _ in errors] == ["templates.en.body"]


def test_empty_templates_and_a_missing_default_language_are_refused() -> None:
    assert [f for f, _ in campaigns.validate(n.CampaignAudience(), {}, None, NOW, "en")] == ["templates"]
    only_de = _templates(de=("Hallo", "Neues"))
    assert [f for f, _ in campaigns.validate(n.CampaignAudience(), only_de, None, NOW, "en")] == ["templates.en"]


def test_send_at_in_the_past_and_an_empty_contact_window_are_refused() -> None:
    audience = n.CampaignAudience(last_contact_after=NOW, last_contact_before=NOW - timedelta(days=1))
    errors = campaigns.validate(audience, _templates(en=("a", "b")), NOW - timedelta(seconds=1), NOW, "en")
    assert sorted(f for f, _ in errors) == ["audience", "send_at"]


@pytest.mark.parametrize(
    ("status", "action", "after"),
    [
        ("scheduled", "pause", "paused"),
        ("sending", "pause", "paused"),
        ("paused", "resume", "sending"),
        ("sending", "cancel", "cancelled"),
        ("paused", "cancel", "cancelled"),
    ],
)
def test_legal_transitions(status: str, action: str, after: str) -> None:
    assert campaigns.transition(status, action) == after


@pytest.mark.parametrize(
    ("status", "action", "allowed"),
    [
        ("sending", "resume", ["cancel", "pause"]),
        ("completed", "pause", []),
        ("cancelled", "resume", []),
        ("paused", "pause", ["cancel", "resume"]),
    ],
)
def test_illegal_transitions_name_the_allowed_ones(status: str, action: str, allowed: list[str]) -> None:
    with pytest.raises(campaigns.IllegalTransition) as caught:
        campaigns.transition(status, action)
    assert caught.value.allowed == allowed and caught.value.status == status


def test_counts_fold_statuses_and_suppressions_by_reason() -> None:
    rows = [
        ("scheduled", None, 2),
        ("digested", None, 1),
        ("sent", None, 3),
        ("delivered", None, 1),
        ("failed", None, 1),
        ("suppressed", "no_consent", 4),
        ("suppressed", "cap", 1),
    ]
    out = campaigns.counts(rows, pending=5).out()
    assert out == {
        "scheduled": 3,
        "sent": 4,
        "delivered": 1,
        "failed": 1,
        "suppressed": {"no_consent": 4, "cap": 1},
        "pending": 5,
    }


def test_a_targets_message_id_is_stable_per_campaign_and_customer() -> None:
    assert campaigns.target_notification_id("c1", "u1") == campaigns.target_notification_id("c1", "u1")
    assert campaigns.target_notification_id("c1", "u1") != campaigns.target_notification_id("c2", "u1")
    assert campaigns.target_key("c1", "u1") == "campaign:c1:u1"


def test_a_campaign_message_renders_its_own_templates_with_language_fallback() -> None:
    book = domain.load_rulebook()
    campaign = {
        "campaign_id": "spring",
        "name": "Spring",
        "templates": {
            "en": {"subject": "{campaign_name} for {customer_id}", "body": "b"},
            "de": {"subject": "Frühling", "body": "d"},
        },
    }
    data = campaigns.message_data(campaign, "cust-1")
    assert domain.render(book, domain.campaign_rule("marketing"), "de-AT", data).subject == "Frühling"
    english = domain.render(book, domain.campaign_rule("marketing"), "fr", data)
    assert (english.language, english.subject) == ("en", "Spring for cust-1")


def test_campaign_events_are_on_no_timeline_customer_events_are() -> None:
    created = new_event(n.CAMPAIGN_STATUS_CHANGED, n.campaign_subject("c1"), {}, "/crm/notification", TP)
    resolved = new_event(CAMPAIGN_AUDIENCE_RESOLVED, n.campaign_subject("c1"), {}, "/crm/analytics", TP)
    sent = new_event(n.NOTIFICATION_SENT, "cust-1", {}, "/crm/notification", TP)
    assert not on_timeline(created) and not on_timeline(resolved) and on_timeline(sent)


@pytest.mark.parametrize(
    ("rate", "size", "interval"), [(50, 10, 0.2), (2, 1, 0.5), (1000, 50, 0.05), (5000, 50, 0.01), (0.5, 1, 2.0)]
)
def test_batches_keep_to_the_rate_and_stay_small(rate: float, size: int, interval: float) -> None:
    """A fast campaign runs batches more often, never one long transaction (a bench run at 5,000/s
    held one transaction of 1,000 targets open for 89 s)."""
    assert campaigns.pacing(rate) == (size, pytest.approx(interval))


def test_the_listing_cursor_round_trips_and_refuses_strangers() -> None:
    cursor = campaign_store.Cursor(NOW, "spring-2026")
    assert campaign_store.Cursor.decode(cursor.encode()) == cursor
    with pytest.raises(ValueError):
        campaign_store.Cursor.decode("not-a-cursor")
