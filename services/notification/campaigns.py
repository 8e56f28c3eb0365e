"""Campaigns, the pure part: what a valid campaign is, which status changes are allowed, how a
campaign's counts read, and the id and data of one target's message. No I/O.

A campaign is created here (notification), its audience is resolved by analytics
(crm.analytics.campaign_audience_resolved.v1, in parts), and its targets are decided one by one
through the same decisions as any rule's message (docs/campaigns.md).
"""

import string
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts import notification as n
from notification import domain

# What a campaign's template may use: the customer's own data stays with intake (and sealed), so
# a campaign's text is the same for everyone but for these.
PLACEHOLDERS = frozenset({"campaign_id", "campaign_name", "customer_id"})

# status -> the actions allowed from it and the status each leads to
TRANSITIONS: dict[str, dict[str, str]] = {
    "scheduled": {"pause": "paused", "cancel": "cancelled"},
    "sending": {"pause": "paused", "cancel": "cancelled"},
    "paused": {"resume": "resumed", "cancel": "cancelled"},
    "cancelled": {},
    "completed": {},
}
ACTIONS = ("pause", "resume", "cancel")


class Invalid(ValueError):
    """A campaign that cannot be made: (field, reason) pairs for the 422 answer."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {r}" for f, r in errors))
        self.errors = errors


class IllegalTransition(ValueError):
    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a {status} campaign")
        self.status = status
        self.allowed = sorted(TRANSITIONS.get(status, {}))


def placeholders(text: str) -> set[str]:
    """The {names} a template uses; ValueError for a malformed one ("{", "{a.b}", "{0}")."""
    names = set()
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"malformed placeholder {{{name}}}")
        names.add(name)
    return names


def validate(
    audience: n.CampaignAudience,
    templates: Mapping[str, n.CampaignTemplate],
    send_at: datetime | None,
    now: datetime,
    default_language: str,
) -> list[tuple[str, str]]:
    """Everything wrong with a campaign, as (field, reason); [] when it may be created."""
    errors: list[tuple[str, str]] = []
    if not templates:
        errors.append(("templates", "empty: at least a template in the default language is needed"))
    elif default_language not in templates:
        errors.append((f"templates.{default_language}", "missing: the default language is the fallback"))
    for lang, template in templates.items():
        for part in ("subject", "body"):
            try:
                unknown = placeholders(getattr(template, part)) - PLACEHOLDERS
            except ValueError as exc:
                errors.append((f"templates.{lang}.{part}", str(exc)))
                continue
            if unknown:
                known = ", ".join(sorted(PLACEHOLDERS))
                errors.append(
                    (f"templates.{lang}.{part}", f"unknown placeholder {{{sorted(unknown)[0]}}} (known: {known})")
                )
    before, after = audience.last_contact_before, audience.last_contact_after
    if before is not None and after is not None and after >= before:
        errors.append(("audience", "last_contact_after is not before last_contact_before: no one can match"))
    if send_at is not None and send_at < now:
        errors.append(("send_at", "in the past"))
    return errors


def transition(status: str, action: str) -> str:
    """The status after `action` (resume: back to sending); IllegalTransition if not allowed."""
    allowed = TRANSITIONS.get(status, {})
    if action not in allowed:
        raise IllegalTransition(status, action)
    return "sending" if allowed[action] == "resumed" else allowed[action]


def target_key(campaign_id: str, customer_id: str) -> str:
    """Idempotency key of a target's one message: a replay or a restart finds it, never a second."""
    return f"campaign:{campaign_id}:{customer_id}"


def target_notification_id(campaign_id: str, customer_id: str) -> str:
    return domain.notification_id_for(target_key(campaign_id, customer_id))


def message_data(campaign: Mapping[str, Any], customer_id: str) -> dict[str, Any]:
    """A target's message data: its placeholders' values and the campaign's templates."""
    return {
        "campaign_id": campaign["campaign_id"],
        "campaign_name": campaign["name"],
        "customer_id": customer_id,
        "templates": campaign["templates"],
    }


def source_event_id(campaign_id: str) -> str:
    """The id the messages name as their source: the campaign, as a stable UUID."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"campaign:{campaign_id}"))


# How a message's status reads in a campaign's counts.
_COUNTED = {
    "pending": "scheduled",
    "scheduled": "scheduled",
    "retrying": "scheduled",
    "sending": "scheduled",
    "digested": "scheduled",
    "sent": "sent",
    "delivered": "delivered",
    "failed": "failed",
}


@dataclass(frozen=True)
class Counts:
    scheduled: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    suppressed: Mapping[str, int] | None = None
    pending: int = 0  # targets not decided yet

    def out(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": self.failed,
            "suppressed": dict(self.suppressed or {}),
            "pending": self.pending,
        }


def counts(rows: Iterable[tuple[str, str | None, int]], pending: int) -> Counts:
    """From (status, reason, count) of the campaign's messages. `sent` counts every message that
    went out (delivered ones too); `delivered` those the receiver confirmed."""
    totals = {"scheduled": 0, "sent": 0, "delivered": 0, "failed": 0}
    suppressed: dict[str, int] = {}
    for status, reason, count in rows:
        if status == "suppressed":
            suppressed[reason or "unknown"] = suppressed.get(reason or "unknown", 0) + count
            continue
        bucket = _COUNTED.get(status)
        if bucket is None:
            continue
        totals[bucket] += count
        if bucket == "delivered":
            totals["sent"] += count
    return Counts(suppressed=suppressed, pending=pending, **totals)


MAX_BATCH = 50  # targets per transaction: short enough that other notifications never wait long
BATCH_EVERY_S = 0.2  # at low rates, a batch this often


def pacing(rate_per_s: float) -> tuple[int, float]:
    """(targets per batch, seconds from one batch's start to the next's) that keep to `rate_per_s`
    with short transactions: a fast campaign runs more batches, not bigger ones."""
    size = max(1, min(MAX_BATCH, int(rate_per_s * BATCH_EVERY_S)))
    return size, size / rate_per_s
