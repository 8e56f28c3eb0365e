"""The agent_reply rule: an agent's reply goes on the channel the agent chose, to a deliverable
address, with consent and blocked channels respected, past the cap and the quiet hours."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts.events import Preferences, QuietHours
from notification import domain

BOOK = domain.load_rulebook()
REPLY = next(r for r in BOOK.rules if r.name == "agent_reply")
CAP = domain.Cap(3, timedelta(days=1))
NIGHT = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # inside 22:00-07:00 UTC quiet hours
QUIET = QuietHours(start="22:00", end="07:00", time_zone="UTC")


def profile(**kw: object) -> domain.Profile:
    base: dict[str, object] = {"known": True, "emails": ("ada@example.com",), "phones": ("+4915112345678",)}
    base.update(kw)
    return domain.Profile(**base)  # type: ignore[arg-type]


def decide(p: domain.Profile, channel: str, recent: int = 0, rule: domain.Rule = REPLY) -> object:
    return domain.decide_customer(rule, p, NIGHT, recent, CAP, None, domain.DigestPolicy(), channel)


def test_a_reply_event_matches_agent_reply_and_renders_its_body() -> None:
    data = {"case_id": "C-1", "body": "A technician comes on Monday.", "channel": "email"}
    assert [r.name for r in BOOK.matching("crm.case.reply_sent.v1", data)] == ["agent_reply"]
    text = domain.render(BOOK, "agent_reply", "de-AT", data)
    assert (text.language, text.subject, text.body) == ("de", "Re: Ihr Fall C-1", "A technician comes on Monday.")
    assert REPLY.channel_from == "channel" and REPLY.purpose == "service" and REPLY.critical


def test_the_agents_channel_wins_over_the_preferred_one() -> None:
    prefers_email = profile(preferences=Preferences(preferred_channel="email"))
    assert decide(prefers_email, "sms") == domain.Schedule("sms", "+4915112345678", NIGHT)
    assert decide(prefers_email, "email") == domain.Schedule("email", "ada@example.com", NIGHT)


def test_no_verified_address_or_a_blocked_channel_suppresses_without_falling_back() -> None:
    assert decide(profile(phones=()), "sms") == domain.Suppress("no_address", "sms")
    assert decide(profile(consent={("service", "sms"): False}), "sms") == domain.Suppress("blocked_channel", "sms")
    assert decide(profile(), "fax") == domain.Suppress("no_address")
    # Marketing consent withdrawn does not matter to a service reply.
    assert isinstance(decide(profile(consent={("marketing", "*"): False}), "email"), domain.Schedule)


def test_quiet_hours_and_the_cap_do_not_hold_a_reply_unless_the_rule_says_so() -> None:
    quiet = profile(preferences=Preferences(quiet_hours=QUIET))
    assert decide(quiet, "email", recent=10) == domain.Schedule("email", "ada@example.com", NIGHT)
    held = REPLY.model_copy(update={"quiet_hours": True})
    assert decide(quiet, "email", rule=held) == domain.Schedule(
        "email", "ada@example.com", datetime(2026, 3, 3, 7, 0, tzinfo=UTC), "quiet_hours"
    )
    assert not BOOK.quiet_hours_apply("agent_reply")
    assert BOOK.quiet_hours_apply("case_resolved") and BOOK.quiet_hours_apply(domain.DIGEST_RULE)


def test_a_rules_file_may_apply_quiet_hours_to_replies(tmp_path: Path) -> None:
    text = domain.RULES_FILE.read_text().replace("    quiet_hours: false\n", "    quiet_hours: true\n")
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    assert domain.load_rulebook(path).quiet_hours_apply("agent_reply")
