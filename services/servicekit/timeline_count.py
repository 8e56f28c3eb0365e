"""How many events each service's timeline holds up to a shared cutoff, so Prometheus can compare
the four timelines (alert CrmTimelineDivergence, docs/runbooks.md).

Every service builds the same customer timeline from the log (timeline.py): once the consumers
have caught up, the events before a given moment are the same in all four, so are their counts.
Per-customer digests would say more, but comparing them needs a job that calls every service;
counts compare in a query. A count misses a difference that keeps it (one event lacking, another
extra), not events missing from one service (dead-lettered, parked at their producer, lost).

The cutoff is TIMELINE_SETTLED_AFTER_S ago, rounded down to a multiple of
TIMELINE_COUNT_INTERVAL_S, and every service counts right after each multiple: the four count
up to the same cutoff, which they export with the count so that the alert compares only equal
cutoffs. Each count reads the whole timeline (nothing indexes time alone), hence once a minute
by default; TIMELINE_COUNT_INTERVAL_S=0 turns it off.
"""

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from eventkit.db import TRANSIENT_ERRORS
from prometheus_client import Gauge

from servicekit.runtime import Runtime
from servicekit.timeline import ON_TIMELINE_SQL, own_events

SETTLED_EVENTS = Gauge(
    "crm_timeline_settled_events",
    "Events on this service's timeline older than crm_timeline_settled_before_seconds",
    ["service"],
)
SETTLED_BEFORE = Gauge(
    "crm_timeline_settled_before_seconds",
    "The cutoff crm_timeline_settled_events counts up to (Unix time)",
    ["service"],
)


log = logging.getLogger(__name__)

_COUNT = "SELECT count(*) FROM timeline WHERE time < $1"
# A service whose own events are on its timeline from its event store counts those too.
_COUNT_WITH_OWN = f"SELECT ({_COUNT}) + (SELECT count(*) FROM events WHERE time < $1 AND {ON_TIMELINE_SQL})"


def settled_cutoff(now_s: float, settled_after_s: float, interval_s: float) -> float:
    """The cutoff every service counts up to at `now_s` (Unix time), whatever its clock's phase."""
    return (now_s - settled_after_s) // interval_s * interval_s


async def count_settled_timeline(rt: Runtime[Any, Any]) -> None:
    s = rt.settings
    interval_s: float = s.timeline_count_interval_s
    if interval_s <= 0:
        await asyncio.Event().wait()  # off; returning would have the caller start it again at once
    count_sql = _COUNT_WITH_OWN if own_events(rt.spec.name) else _COUNT
    events, before = SETTLED_EVENTS.labels(s.service_name), SETTLED_BEFORE.labels(s.service_name)
    while True:
        cutoff = settled_cutoff(time.time(), s.timeline_settled_after_s, interval_s)
        try:
            async with rt.db.acquire() as conn:
                n = await conn.fetchval(count_sql, datetime.fromtimestamp(cutoff, UTC))
        except TRANSIENT_ERRORS as exc:
            # The last count and its cutoff stay: an older cutoff than the others' is not compared.
            log.warning("timeline count failed, database unavailable: %s", type(exc).__name__)
        else:
            events.set(n)
            before.set(cutoff)
        await asyncio.sleep(interval_s - time.time() % interval_s)  # right after the next multiple
