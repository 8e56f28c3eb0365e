"""The KPI stream: every topic folded into analytics' KPI tables and insights (KpiProjection).

It is eventkit's IdempotentConsumer, as the timeline is, in a consumer group of its own
(crm-analytics-kpi) with its own dedup record (kpi_applied_events): the KPI fold is the heavy
part of analytics, so it keeps its own offsets and lag (crm_consumer_lag{service="analytics-kpi"})
and never holds up the timeline. Rebalances, a broker that forgot the group or its partitions,
redeliveries and poison messages are handled there, once for every consumer.
"""

from collections.abc import Sequence
from datetime import timedelta

from eventkit.consumer import IdempotentConsumer, Waiters
from servicekit.app import runtime_consumer
from servicekit.runtime import Runtime

from analytics.campaign_projection import CampaignProjection
from analytics.projections import KpiProjection
from analytics.settings import AnalyticsSettings
from contracts.topics import ALL_EVENT_TOPICS


def kpi_consumer(rt: Runtime[AnalyticsSettings, None], topics: Sequence[str] = ALL_EVENT_TOPICS) -> IdempotentConsumer:
    s = rt.settings
    return runtime_consumer(
        rt,
        service=f"{s.service_name}-kpi",
        group_id=f"crm-{s.service_name}-kpi",
        # analytics' own topic too (by default), for a lag on every topic; KpiProjection skips its events
        topics=topics,
        # Campaigns after the KPI fold: a merge in the batch is an alias by then.
        subscribers=[
            KpiProjection(rt.events, s.source),
            CampaignProjection(rt.events, s.source, timedelta(seconds=s.campaign_attribution_window_s)),
        ],
        waiters=Waiters(),  # no request waits on the KPI fold
        applied_table="kpi_applied_events",
    )


async def run_kpi_stream(rt: Runtime[AnalyticsSettings, None]) -> None:
    consumer = kpi_consumer(rt)
    await consumer.start()
    try:
        await consumer.run()
    finally:
        await consumer.stop()
