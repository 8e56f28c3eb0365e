"""Which campaign an inbound interaction or an unsubscribe answers: pure functions.

A touch is a campaign message that reached a customer (notification's sent or delivered decision
carrying `campaign_id`). An inbound interaction is a response to:
- the campaign its `metadata.campaign_id` names, when analytics knows that campaign (`metadata`);
- else the campaign of the customer's last touch at or before it, within the attribution window
  (CAMPAIGN_ATTRIBUTION_WINDOW_S, `window`).
A purchase among the responses is a conversion; its `metadata.amount` is revenue. Marketing
consent withdrawn within the window after a touch counts that (last) campaign as unsubscribed.
"""

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

DEFAULT_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Touch:
    campaign_id: str
    customer_id: str
    channel: str
    at: datetime


@dataclass(frozen=True)
class Interaction:
    event_id: str
    customer_id: str
    at: datetime
    channel: str
    kind: str
    direction: str
    campaign_id: str | None = None  # metadata.campaign_id
    amount: float | None = None  # metadata.amount


@dataclass(frozen=True)
class Response:
    campaign_id: str
    customer_id: str
    channel: str  # the channel the campaign reached them on
    interaction_event_id: str
    kind: str
    amount: float | None
    attributed_by: Literal["metadata", "window"]

    @property
    def conversion(self) -> bool:
        return self.kind == "purchase"

    @property
    def revenue(self) -> float:
        return self.amount if self.conversion and self.amount is not None else 0.0


def last_touch(touches: Iterable[Touch], at: datetime, window: timedelta) -> Touch | None:
    """The latest touch at or before `at` and no more than `window` before it."""
    best: Touch | None = None
    for t in touches:
        if t.at <= at and at - t.at <= window and (best is None or (t.at, t.campaign_id) > (best.at, best.campaign_id)):
            best = t
    return best


def attribute(
    i: Interaction, touches: Collection[Touch], window: timedelta, known_campaigns: Collection[str]
) -> Response | None:
    """The response this interaction is, or None. `touches` are the customer's."""
    if i.direction != "inbound":
        return None
    mine = [t for t in touches if t.customer_id == i.customer_id]
    if i.campaign_id is not None and i.campaign_id in known_campaigns:
        reached = last_touch((t for t in mine if t.campaign_id == i.campaign_id), i.at, timedelta.max)
        channel = reached.channel if reached else i.channel
        return Response(i.campaign_id, i.customer_id, channel, i.event_id, i.kind, i.amount, "metadata")
    touch = last_touch(mine, i.at, window)
    if touch is None:
        return None
    return Response(touch.campaign_id, i.customer_id, touch.channel, i.event_id, i.kind, i.amount, "window")


def unsubscribed(
    customer_id: str, purpose: str, granted: bool, at: datetime, touches: Iterable[Touch], window: timedelta
) -> Touch | None:
    """The touch whose campaign a withdrawal of marketing consent counts against, or None."""
    if purpose != "marketing" or granted:
        return None
    return last_touch((t for t in touches if t.customer_id == customer_id), at, window)


def amount_of(metadata: object) -> float | None:
    """metadata.amount as a number; anything else (absent, a string, a bool) is no amount."""
    if not isinstance(metadata, dict):
        return None
    amount = metadata.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return None
    return float(amount)
