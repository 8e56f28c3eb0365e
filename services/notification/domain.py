"""Notification rules and decisions: pure functions, no I/O, an injectable clock.

- Rules (rules.yaml) say which events make which messages for whom; templates per language.
- decide_customer() picks the channel a customer may be reached on for a rule (consent,
  blocked channels, preferred channel), applies the frequency cap and delays the message out
  of the customer's quiet hours (never drops it for them). A non-critical message over the cap
  goes into the customer's digest of its window (or is suppressed when digests are off).
- digest_window() / digest_due() / render_digest(): one digest per (customer, window), due at
  the window's end (or when quiet hours end), listing its messages in the customer's language.
- staff_targets() resolves a rule's owner/team recipients to configured staff addresses.
- retry_delay() is the exponential backoff with jitter between delivery tries; retry_at() moves
  a customer's retry out of their quiet hours.
"""

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field

from contracts.events import Preferences, QuietHours

Clock = Callable[[], datetime]
CustomerChannel = Literal["email", "sms"]
Refusal = Literal["blocked_channel", "no_consent"]  # why a channel may not carry a message
SuppressReason = Literal[Refusal, "cap", "duplicate", "no_address"]
DelayReason = Literal["quiet_hours", "not_before"]
CUSTOMER_CHANNELS: tuple[CustomerChannel, ...] = ("email", "sms")
ALL_CHANNELS = "*"  # a consent row for every channel
RULES_FILE = Path(__file__).parent / "rules.yaml"
_ID_NAMESPACE = uuid.UUID("6f1c1e1a-4a51-4f7e-9d0c-0a7b6f1f5e01")


def system_clock() -> datetime:
    return datetime.now(UTC)


def notification_id_for(key: str) -> str:
    """Deterministic id of the one message for (rule, event, recipient): a retry or a restart
    computes the same id, which travels as Message-ID and Idempotency-Key to the receiver."""
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def idempotency_key(rule: str, event_id: str, recipient: str) -> str:
    return f"{rule}|{event_id}|{recipient}"


# --- rules as data -----------------------------------------------------------------------------


class _Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    in_: tuple[str, ...] | None = Field(default=None, alias="in")
    not_in: tuple[str, ...] | None = None

    def holds(self, value: Any) -> bool:
        if self.in_ is not None and value not in self.in_:
            return False
        return not (self.not_in is not None and value in self.not_in)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    event: str
    when: dict[str, _Condition] = Field(default_factory=dict)
    audience: Literal["customer", "staff"]
    recipients: tuple[Literal["owner", "team"], ...] = ()
    purpose: Literal["service", "marketing"] = "service"
    critical: bool = False
    not_before: str | None = None
    # The event data field naming the one channel the message goes on (an agent's reply), instead
    # of the customer's preferred one; consent and blocked channels still apply.
    channel_from: str | None = None
    # False: the customer's quiet hours do not delay it (a reply the customer is waiting for).
    quiet_hours: bool = True

    def matches(self, event_type: str, data: Mapping[str, Any]) -> bool:
        return event_type == self.event and all(c.holds(data.get(f)) for f, c in self.when.items())


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    subject: str
    body: str


DIGEST_RULE = "digest"  # the rule name digests carry in rows and events
_DEFAULT_DIGEST = {
    "en": Template(
        subject="Your updates ({count})",
        body="Here is what happened while we held back separate messages:\n\n{items}",
    )
}


class RuleBook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default_language: str = "en"
    rules: tuple[Rule, ...]
    templates: dict[str, dict[str, Template]]
    # The digest's frame per language: {count} and {items} (the listed messages) as placeholders.
    digest: dict[str, Template] = Field(default_factory=lambda: dict(_DEFAULT_DIGEST))

    def matching(self, event_type: str, data: Mapping[str, Any]) -> list[Rule]:
        return [r for r in self.rules if r.matches(event_type, data)]

    def quiet_hours_apply(self, rule: str) -> bool:
        """Whether the customer's quiet hours hold this rule's messages (digests: always)."""
        found = next((r for r in self.rules if r.name == rule), None)
        return found is None or found.quiet_hours

    def check(self) -> "RuleBook":
        """Every rule has a template in the default language: the fallback must always exist."""
        for rule in self.rules:
            if rule.name == DIGEST_RULE:
                raise ValueError(f"rule name {DIGEST_RULE} is reserved for digests")
            if rule.name.startswith("campaign_"):
                raise ValueError(f"rule name {rule.name}: campaign_* names are reserved for campaigns")
            if self.default_language not in self.templates.get(rule.name, {}):
                raise ValueError(f"rule {rule.name} has no {self.default_language} template")
        if self.default_language not in self.digest:
            raise ValueError(f"the digest has no {self.default_language} template")
        return self


def load_rulebook(path: Path = RULES_FILE) -> RuleBook:
    return RuleBook.model_validate(yaml.safe_load(path.read_text())).check()


@dataclass(frozen=True)
class Rendered:
    language: str
    subject: str
    body: str


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _language(templates: Mapping[str, Template], language: str | None, default: str) -> str:
    wanted = [language, language.split("-")[0]] if language else []
    return next((lang for lang in wanted if lang in templates), default)


# A campaign's messages are made by these rules; their templates are the campaign's own, carried
# in each message's data (`templates`), so a digest renders them like any rule's.
CAMPAIGN_RULES = (
    Rule(name="campaign_marketing", event="", audience="customer", purpose="marketing"),
    Rule(name="campaign_service", event="", audience="customer", purpose="service"),
)


def campaign_rule(purpose: str) -> str:
    return f"campaign_{purpose}"


def render(book: RuleBook, rule: str, language: str | None, data: Mapping[str, Any]) -> Rendered:
    """The rule's template in `language`, else its base language (en-GB -> en), else the default."""
    templates = book.templates.get(rule)
    if templates is None:  # a campaign's message: its own templates
        templates = {lang: Template.model_validate(t) for lang, t in data["templates"].items()}
    chosen = _language(templates, language, book.default_language)
    values = _Blank({k: "" if v is None else str(v) for k, v in data.items() if k != "templates"})
    t = templates[chosen]
    return Rendered(chosen, t.subject.format_map(values).strip(), t.body.format_map(values).strip())


def render_digest(book: RuleBook, language: str | None, items: Sequence[tuple[str, Mapping[str, Any]]]) -> Rendered:
    """One message listing `items` ((rule, event data), oldest first), each rendered with its
    rule's template. The frame's language falls back like a rule's (de-AT -> de -> default) and
    every item is rendered in that same language where its rule has it, so a message reads in one
    language as far as the templates allow."""
    chosen = _language(book.digest, language, book.default_language)
    lines = []
    for rule, data in items:
        text = render(book, rule, chosen, data)
        lines.append(f"- {text.subject}\n  {text.body}")
    values = _Blank(count=str(len(items)), items="\n\n".join(lines))
    t = book.digest[chosen]
    return Rendered(chosen, t.subject.format_map(values).strip(), t.body.format_map(values).strip())


# --- the customer's side: consent, preferences, addresses --------------------------------------


@dataclass(frozen=True)
class Profile:
    """What notification's own projection knows about a customer (merged ids folded in)."""

    known: bool = False
    emails: tuple[str, ...] = ()  # most recent first
    phones: tuple[str, ...] = ()
    consent: Mapping[tuple[str, str], bool] = field(default_factory=dict)  # (purpose, channel or "*")
    preferences: Preferences = field(default_factory=Preferences)

    def address(self, channel: str) -> str | None:
        found = self.emails if channel == "email" else self.phones if channel == "sms" else ()
        return found[0] if found else None


# Without an answer, service messages are allowed (the customer asked for the service) and
# marketing is not (opt-in).
DEFAULT_CONSENT = {"service": True, "marketing": False}


def consented(profile: Profile, purpose: str, channel: str) -> bool:
    """The channel's own answer wins over the every-channel one, which wins over the default."""
    for key in ((purpose, channel), (purpose, ALL_CHANNELS)):
        if key in profile.consent:
            return profile.consent[key]
    return DEFAULT_CONSENT.get(purpose, False)


def blocked(profile: Profile, channel: str) -> bool:
    """Withdrawing service consent for a channel blocks it entirely, even for critical messages."""
    return not consented(profile, "service", channel)


def channel_refusal(profile: Profile, channel: str, purpose: str) -> Refusal | None:
    """Why this channel may not carry a message of this purpose now, or None if it may."""
    if blocked(profile, channel):
        return "blocked_channel"
    if purpose == "marketing" and not consented(profile, "marketing", channel):
        return "no_consent"
    return None


def candidate_channels(preferences: Preferences) -> list[CustomerChannel]:
    preferred = preferences.preferred_channel
    first = [c for c in CUSTOMER_CHANNELS if c == preferred]
    return first + [c for c in CUSTOMER_CHANNELS if c != preferred]


@dataclass(frozen=True)
class Schedule:
    channel: str
    address: str
    deliver_at: datetime
    delayed_reason: DelayReason | None = None


@dataclass(frozen=True)
class Suppress:
    reason: SuppressReason
    channel: str | None = None


@dataclass(frozen=True)
class ToDigest:
    """Over the cap, not critical: the message goes into the customer's digest of `window_start`,
    which goes out at `deliver_at` (the window's end, or when quiet hours end after it)."""

    channel: str
    address: str
    window_start: datetime
    deliver_at: datetime
    delayed_reason: Literal["quiet_hours"] | None = None


@dataclass(frozen=True)
class Cap:
    """At most `max_messages` non-critical messages per recipient within `window`."""

    max_messages: int
    window: timedelta


@dataclass(frozen=True)
class DigestPolicy:
    """Non-critical customer messages over the cap are collected per fixed `window` (aligned to
    the epoch, UTC) into one digest, instead of being suppressed; `enabled=False` suppresses them."""

    window: timedelta = timedelta(hours=1)
    enabled: bool = True


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def digest_window(at: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """The [start, end) digest window holding `at`: fixed slots from the epoch, so every instance
    and every restart computes the same window (and so the same digest id) for an instant."""
    slots = (at - _EPOCH) // window
    start = _EPOCH + slots * window
    return start, start + window


def digest_due(window_end: datetime, quiet: QuietHours | None) -> tuple[datetime, Literal["quiet_hours"] | None]:
    """When the digest of a window goes out: at its end, or when quiet hours holding it end."""
    end = quiet_hours_end(window_end, quiet) if quiet else None
    return (end, "quiet_hours") if end is not None else (window_end, None)


def digest_key(recipient: str, window_start: datetime) -> str:
    """Idempotency key of the one digest per (recipient, window); its id is derived from it."""
    return f"{DIGEST_RULE}|{window_start.astimezone(UTC).isoformat()}|{recipient}"


def decide_customer(
    rule: Rule,
    profile: Profile,
    now: datetime,
    recent_messages: int,
    cap: Cap,
    not_before: datetime | None = None,
    digest: DigestPolicy | None = None,
    only_channel: str | None = None,
) -> Schedule | Suppress | ToDigest:
    """Channel, cap (with digest) and quiet hours for one customer message.

    The first candidate channel (preferred first) with an address that consent allows is used;
    if none is, the refusal of the first channel with an address is the reason. Service-critical
    messages pass the cap and never wait for a digest. `only_channel` (a rule's channel_from)
    leaves that one channel as the only candidate; a rule with quiet_hours false is not delayed
    by them.
    """
    refusal: Suppress | None = None
    chosen: tuple[str, str] | None = None
    if only_channel is not None:
        if only_channel not in CUSTOMER_CHANNELS:
            return Suppress("no_address")
        if profile.address(only_channel) is None:
            return Suppress("no_address", only_channel)
    candidates = candidate_channels(profile.preferences) if only_channel is None else [only_channel]
    for channel in candidates:
        address = profile.address(channel)
        if address is None:
            continue
        reason = channel_refusal(profile, channel, rule.purpose)
        if reason is None:
            chosen = (channel, address)
            break
        refusal = refusal or Suppress(reason, channel)
    if chosen is None:
        return refusal or Suppress("no_address")
    picked, address = chosen
    earliest = not_before if not_before is not None and not_before > now else now
    if not rule.critical and recent_messages >= cap.max_messages:
        if digest is None or not digest.enabled:
            return Suppress("cap", picked)
        start, window_end = digest_window(earliest, digest.window)
        due, delay = digest_due(window_end, profile.preferences.quiet_hours)
        return ToDigest(picked, address, start, due, delay)
    deliver_at = now
    why: DelayReason | None = None
    if not_before is not None and not_before > now:
        deliver_at, why = not_before, "not_before"
    quiet = profile.preferences.quiet_hours if rule.quiet_hours else None
    end = quiet_hours_end(deliver_at, quiet) if quiet else None
    if end is not None:
        deliver_at, why = end, "quiet_hours"
    return Schedule(picked, address, deliver_at, why)


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # intake checks only the length; an unknown zone reads as UTC


def quiet_hours_end(at: datetime, quiet: QuietHours) -> datetime | None:
    """If `at` is inside the quiet hours (wall clock of their time zone), the UTC instant they end.

    start after end spans midnight (22:00-07:00). An end wall time skipped by a daylight-saving
    change is read with the offset before the change, i.e. just after the gap.
    """
    zone = _zone(quiet.time_zone)
    local = at.astimezone(zone)
    start, end, now = _hhmm(quiet.start), _hhmm(quiet.end), local.time().replace(tzinfo=None)
    if start == end:
        return None
    end_day: date
    if start < end:
        if not start <= now < end:
            return None
        end_day = local.date()
    else:
        if end <= now < start:
            return None
        end_day = local.date() + timedelta(days=1) if now >= start else local.date()
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


# --- staff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffContact:
    email: str | None = None
    webhook_url: str | None = None


@dataclass(frozen=True)
class StaffDirectory:
    """Owners and teams by name; anyone not listed goes to the default team webhook/email."""

    contacts: Mapping[str, StaffContact] = field(default_factory=dict)
    default_webhook_url: str | None = None
    default_email: str | None = None
    language: str = "en"


@dataclass(frozen=True)
class StaffTarget:
    recipient: str  # staff:<owner|team>:<name>
    channel: str | None
    address: str | None


def staff_targets(rule: Rule, data: Mapping[str, Any], directory: StaffDirectory) -> list[StaffTarget]:
    """A webhook is preferred over email; a recipient with neither has no address."""
    targets = []
    for role in rule.recipients:
        name = data.get(role)
        if not name:
            continue  # an unassigned case has no owner to tell
        contact = directory.contacts.get(str(name), StaffContact())
        webhook = contact.webhook_url or (None if contact.email else directory.default_webhook_url)
        email = contact.email or directory.default_email
        if webhook:
            targets.append(StaffTarget(f"staff:{role}:{name}", "webhook", webhook))
        elif email:
            targets.append(StaffTarget(f"staff:{role}:{name}", "email", email))
        else:
            targets.append(StaffTarget(f"staff:{role}:{name}", None, None))
    return targets


def decide_staff(
    target: StaffTarget, now: datetime, recent_messages: int, cap: Cap, *, critical: bool
) -> Schedule | Suppress:
    """Staff messages need no customer consent and have no quiet hours. Non-critical ones are
    rate-limited per address (`recent_messages` counts the address's non-critical ones); a
    critical one (an SLA breach) is never capped, like a customer's service-critical message."""
    if target.channel is None or target.address is None:
        return Suppress("no_address")
    if not critical and recent_messages >= cap.max_messages:
        return Suppress("cap", target.channel)
    return Schedule(target.channel, target.address, now)


def duplicates(targets: Sequence[StaffTarget]) -> set[int]:
    """Indexes of targets whose (channel, address) an earlier target of the same event has."""
    seen: set[tuple[str, str]] = set()
    out: set[int] = set()
    for n, t in enumerate(targets):
        if t.channel is None or t.address is None:
            continue
        if (t.channel, t.address) in seen:
            out.add(n)
        seen.add((t.channel, t.address))
    return out


# --- retries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=10)
    jitter: float = 0.2  # +-20 % so that receivers coming back are not hit by every retry at once


def retry_delay(policy: RetryPolicy, attempt: int, rand: Callable[[], float]) -> timedelta:
    """Delay after try number `attempt` (1-based): base * 2^(attempt-1), capped, with jitter."""
    raw = min(policy.max_delay, policy.base * (2 ** (attempt - 1)))
    factor = 1 - policy.jitter + 2 * policy.jitter * rand()
    return min(policy.max_delay, raw * factor)


def retry_at(
    policy: RetryPolicy, attempt: int, now: datetime, rand: Callable[[], float], quiet: QuietHours | None = None
) -> tuple[datetime, Literal["quiet_hours"] | None]:
    """When the try after try number `attempt` goes: after the backoff, or, if that instant falls
    inside the customer's quiet hours, when they end (the same rule as the first scheduling:
    delayed, never dropped). Staff messages have no quiet hours (quiet=None)."""
    at = now + retry_delay(policy, attempt, rand)
    end = quiet_hours_end(at, quiet) if quiet else None
    return (end, "quiet_hours") if end is not None else (at, None)
