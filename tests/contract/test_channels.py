"""The interaction channels are listed once, in contracts.events.Channel: the channel scopes of
API keys and analytics' per-channel gauges follow it, so editing one copy alone fails here."""

import re
from typing import get_args

from analytics import metrics

from contracts.events import CHANNELS, Channel
from contracts.security import SCOPE_PATTERN


def test_channels_are_the_channel_literal() -> None:
    assert get_args(Channel) == CHANNELS
    assert len(set(CHANNELS)) == len(CHANNELS)


def test_the_scope_pattern_accepts_exactly_the_channels() -> None:
    scope = re.compile(SCOPE_PATTERN)
    assert all(scope.match(f"channel:{c}") for c in CHANNELS)
    # What the pattern lists between channel:( and ), read from the pattern itself.
    listed = re.search(r"channel:\(([^)]*)\)", SCOPE_PATTERN)
    assert listed is not None
    assert tuple(listed.group(1).split("|")) == CHANNELS
    for other in ("webhook", "fax", "", "web|chat", "in-person", f"{CHANNELS[0]}x"):
        assert not scope.match(f"channel:{other}"), other


def test_analytics_gauges_every_channel_of_the_contract() -> None:
    assert metrics.CHANNELS is CHANNELS
