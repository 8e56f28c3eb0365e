"""The KPI stream: every topic folded into analytics' KPI tables and insights (KpiProjection).

It is eventkit's IdempotentConsumer, as the timeline is, in a consumer group of its own
(crm-analytics-kpi) with its own dedup record (kpi_applied_events): the KPI fold is the heavy
part of analytics, so it keeps its own offsets and lag (crm_consumer_lag{service="analytics-kpi"})
and never holds up the timeline. Rebalances, a broker that forgot the group or its partitions,
redeliveries and poison messages are handled there, once for every consumer.
"""

from collections.abc import Sequence

from eventkit.consumer import IdempotentConsumer, Waiters
from servicekit.app import acceptance
from servicekit.runtime import Runtime

from analytics.projections import KpiProjection
from analytics.settings import AnalyticsSettings
from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER


def kpi_consumer(rt: Runtime[AnalyticsSettings, None], topics: Sequence[str] = ALL_EVENT_TOPICS) -> IdempotentConsumer:
    s = rt.settings
    assert rt.producer is not None, "the producer starts before the background loops"
    return IdempotentConsumer(
        service=f"{s.service_name}-kpi",
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=f"crm-{s.service_name}-kpi",
        # analytics' own topic too (by default), for a lag on every topic; KpiProjection skips its events
        topics=topics,
        pool=rt.db,
        producer=rt.producer,
        subscribers=[KpiProjection(rt.events, s.source)],
        waiters=Waiters(),  # no request waits on the KPI fold
        max_batch=s.consumer_max_batch,
        session_timeout_ms=s.kafka_session_timeout_ms,
        commit_interval_ms=s.consumer_commit_interval_ms,
        fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        acceptance=acceptance(s),  # what the service's own consumer applies, no more
        deadletter_topic=DEADLETTER,
        client_options=s.kafka_client_options(),
        applied_table="kpi_applied_events",
    )


async def run_kpi_stream(rt: Runtime[AnalyticsSettings, None]) -> None:
    consumer = kpi_consumer(rt)
    await consumer.start()
    try:
        await consumer.run()
    finally:
        await consumer.stop()
