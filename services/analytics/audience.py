"""A campaign's audience: which customers a filter selects, as a pure function of a customer row.

The audience object comes from notification's crm.notification.campaign_created.v1; every field
given must match. campaign_store.resolve_audience is the same rule in SQL over analytics' own
tables (a test checks that both agree). Merged customers have no row of their own (the fold moves
them into the survivor), so they count once, under the survivor; erased customers never match.

Last contact is the customer's last interaction. `last_contact_before` selects customers not in
contact since that time (never contacted included: the win-back case); `last_contact_after` those
in contact at or after it.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

from contracts.analytics import RiskBand, Segment
from contracts.events import CHANNELS

MAX_PART = 1000  # customer ids per crm.analytics.campaign_audience_resolved.v1
SEGMENTS = frozenset(get_args(Segment))
RISK_BANDS = frozenset(get_args(RiskBand))
FIELDS = frozenset(
    {"segment", "risk_band", "region", "channel_used", "vip", "last_contact_before", "last_contact_after"}
)


class AudienceError(ValueError):
    """The audience object is not one analytics can resolve."""


@dataclass(frozen=True)
class Audience:
    segment: str | None = None
    risk_band: str | None = None
    region: str | None = None
    channel_used: str | None = None
    vip: bool | None = None
    last_contact_before: datetime | None = None
    last_contact_after: datetime | None = None


@dataclass(frozen=True)
class CustomerRow:
    """What the filters read of one customer (analytics_customers and its channels)."""

    customer_id: str
    segment: str | None = None
    risk_band: str | None = None
    region: str | None = None
    vip: bool = False
    last_contact: datetime | None = None
    channels: frozenset[str] = field(default_factory=frozenset)
    erased: bool = False


def _time(name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AudienceError(f"{name}: not an RFC 3339 time")
    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise AudienceError(f"{name}: not an RFC 3339 time") from exc
    if t.tzinfo is None:
        raise AudienceError(f"{name}: needs a UTC offset")
    return t


def _one_of(name: str, value: Any, allowed: Iterable[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in set(allowed):
        raise AudienceError(f"{name}: unknown value {value!r}")
    return value


def parse(raw: Mapping[str, Any]) -> Audience:
    """The audience object of a campaign_created event, checked (the event is notification's)."""
    if not isinstance(raw, Mapping):
        raise AudienceError("audience: not an object")
    unknown = set(raw) - FIELDS
    if unknown:
        raise AudienceError(f"audience: unknown fields {sorted(unknown)}")
    region = raw.get("region")
    if region is not None and (not isinstance(region, str) or not region):
        raise AudienceError("region: not a region code")
    vip = raw.get("vip")
    if vip is not None and not isinstance(vip, bool):
        raise AudienceError("vip: not a boolean")
    return Audience(
        segment=_one_of("segment", raw.get("segment"), SEGMENTS),
        risk_band=_one_of("risk_band", raw.get("risk_band"), RISK_BANDS),
        region=region,
        channel_used=_one_of("channel_used", raw.get("channel_used"), CHANNELS),
        vip=vip,
        last_contact_before=_time("last_contact_before", raw.get("last_contact_before")),
        last_contact_after=_time("last_contact_after", raw.get("last_contact_after")),
    )


def matches(a: Audience, c: CustomerRow) -> bool:
    if c.erased:
        return False
    if a.segment is not None and c.segment != a.segment:
        return False
    if a.risk_band is not None and c.risk_band != a.risk_band:
        return False
    if a.region is not None and c.region != a.region:
        return False
    if a.channel_used is not None and a.channel_used not in c.channels:
        return False
    if a.vip is not None and c.vip != a.vip:
        return False
    if a.last_contact_before is not None and c.last_contact is not None and c.last_contact >= a.last_contact_before:
        return False
    return a.last_contact_after is None or (c.last_contact is not None and c.last_contact >= a.last_contact_after)


def select(a: Audience, rows: Iterable[CustomerRow]) -> list[str]:
    """The audience's customer ids, sorted, each once."""
    return sorted({c.customer_id for c in rows if matches(a, c)})


def parts(customer_ids: list[str], size: int = MAX_PART) -> list[list[str]]:
    """The audience in parts of at most `size` ids; an empty audience is one empty part, so that
    its resolution is still on record."""
    return [customer_ids[i : i + size] for i in range(0, len(customer_ids), size)] or [[]]
