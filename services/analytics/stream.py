"""The KPI fold on analytics' one consumer: every topic folded into analytics' KPI tables and
insights (KpiProjection) and campaign results (CampaignProjection).

They are subscribers of the service's own consumer (group crm-analytics), after the timeline's,
so each batch is read once, decoded once and applied to the timeline, the KPIs and the
campaigns in one transaction, with one dedup record (applied_events). Until 2026-12 the fold
had a consumer group of its own (crm-analytics-kpi, dedup record kpi_applied_events);
kpi_upgrade.py retires it at start without counting an event twice or losing one, and leaves
in kpi_pending_skip the ids of the events that group had folded ahead of the timeline:
KpiGate keeps them from the fold once more.
"""

from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from eventkit.consumer import Subscriber
from eventkit.envelope import Envelope
from eventkit.eventstore import EventStore

from analytics.campaign_projection import CampaignProjection
from analytics.projections import KpiProjection
from analytics.settings import AnalyticsSettings

LEGACY_KPI_GROUP_SUFFIX = "-kpi"  # crm-analytics-kpi: the retired group


class KpiGate:
    """The KPI subscribers, minus the events the retired KPI group had already folded.

    While kpi_pending_skip may hold ids, each batch takes its ids out of it (in the batch's
    transaction: a rollback puts them back) and the fold skips those events. Once a batch
    finds the table empty at its start (committed state), no batch asks again.
    """

    def __init__(self, subscribers: Sequence[Subscriber]) -> None:
        self._subscribers = list(subscribers)
        self._maybe_pending = True

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        if self._maybe_pending:
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM kpi_pending_skip)"):
                rows = await conn.fetch(
                    "DELETE FROM kpi_pending_skip WHERE event_id = ANY($1::uuid[]) RETURNING event_id",
                    [e.id for e in events],
                )
                skip = {str(r["event_id"]) for r in rows}
                events = [e for e in events if e.id not in skip]
            else:
                self._maybe_pending = False
        if not events:
            return
        for subscriber in self._subscribers:
            await subscriber.apply(conn, events)


def kpi_subscribers(events: EventStore, settings: AnalyticsSettings) -> list[Subscriber]:
    """The fold's subscribers without the gate (the retirement's catch-up applies them as well)."""
    return [
        KpiProjection(events, settings.source),
        # Campaigns after the KPI fold: a merge in the batch is an alias by then.
        CampaignProjection(events, settings.source, timedelta(seconds=settings.campaign_attribution_window_s)),
    ]
