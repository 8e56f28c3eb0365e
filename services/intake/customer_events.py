"""Writing a customer's events: their stream, event times that keep the order of decisions,
and the consent a merge carries over to the survivor."""

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from eventkit.eventstore import Append

from contracts.events import CONSENT_CHANGED
from contracts.topics import INTAKE
from intake import domain, store


def stream_of(customer_id: str) -> str:
    return f"customer-{customer_id}"


class EventClock:
    """Event times one microsecond apart, so the canonical (time, id) order keeps the order of
    decisions within a request: created, merged, identifiers added, interaction."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self._n = 0

    def tick(self) -> datetime:
        self._n += 1
        return self.now + timedelta(microseconds=self._n)


async def merge_consent(conn: asyncpg.Connection, merge: domain.Merge, event: Any) -> list[Append]:
    """The survivor takes the most restrictive consent of the two; each change is an event."""
    changes = domain.merged_consent(
        await store.consent(conn, merge.survivor_id), await store.consent(conn, merge.merged_id)
    )
    if not changes:
        return []
    await store.set_consent(conn, merge.survivor_id, changes, datetime.now(UTC))
    new = [
        event(
            CONSENT_CHANGED,
            merge.survivor_id,
            domain.consent_changed(
                merge.survivor_id,
                purpose,
                None if channel == store.ALL_CHANNELS else channel,
                granted,
                merged_from=merge.merged_id,  # what an unmerge takes back
            ),
        )
        for (purpose, channel), granted in sorted(changes.items())
    ]
    return [Append(stream_of(merge.survivor_id), None, new, INTAKE)]
