"""KPI gauges for the customer-service dashboard: the last 24 hours, refreshed in the background.

Labels are channels and priorities only; nothing personal. The campaign gauges are labelled by
campaign id, bounded: only the newest CAMPAIGN_GAUGE_LIMIT campaigns still sending or within their
attribution window have them, and a campaign's series are removed when it drops out.
"""

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import Gauge
from servicekit.app import Runtime

from analytics import campaign_store, store
from contracts.events import CHANNELS

KPI = Gauge("crm_kpi_last_24h", "Customer-service KPIs over the last 24 hours", ["kpi"])
CAMPAIGN = Gauge(
    "crm_campaign_results",
    "Results of the active campaigns: sent, responded, response_rate, conversions, revenue, unsubscribed",
    ["campaign_id", "metric"],
)
CAMPAIGN_METRICS = ("sent", "delivered", "responded", "response_rate", "conversions", "revenue", "unsubscribed")
KPI_BY_CHANNEL = Gauge("crm_kpi_interactions_last_24h", "Interactions in the last 24 hours by channel", ["channel"])


async def refresh_kpi_gauges(rt: Runtime) -> None:
    interval_s = getattr(rt.settings, "kpi_gauge_interval_ms", 15_000) / 1000
    while True:
        end = datetime.now(UTC)
        q = store.KpiQuery(end - timedelta(hours=24), end, "hour")
        async with rt.db.acquire() as conn:
            totals = (await store.kpis(conn, q))["totals"]
            counts = await store.interactions_by_channel(conn, end - timedelta(hours=24))
        values = {
            "interactions": totals["interactions"]["volume"],
            "complaints": totals["interactions"]["complaints"],
            "cases_opened": totals["cases"]["opened"],
            "cases_resolved": totals["cases"]["resolved"],
            "cases_closed_same_day": totals["cases"]["closed_same_day"],
            "first_response_p90_seconds": totals["cases"]["first_response_seconds"]["p90"],
            "resolution_mean_seconds": totals["cases"]["resolution_seconds"]["mean"],
            "resolution_p90_seconds": totals["cases"]["resolution_seconds"]["p90"],
            "first_contact_resolution_pct": totals["cases"]["first_contact_resolution_pct"],
            "sla_compliance_pct": totals["cases"]["sla_compliance_pct"],
            "csat_mean": totals["csat"]["mean"],
            "nps": totals["nps"]["score"],
            "notification_delivery_rate_pct": totals["notifications"]["delivery_rate_pct"],
            "notification_suppression_rate_pct": totals["notifications"]["suppression_rate_pct"],
        }
        for name, value in values.items():
            KPI.labels(name).set(float("nan") if value is None else float(value))
        for channel in CHANNELS:
            KPI_BY_CHANNEL.labels(channel).set(counts.get(channel, 0))
        await asyncio.sleep(interval_s)


async def refresh_campaign_gauges(rt: Runtime) -> None:
    interval_s = getattr(rt.settings, "kpi_gauge_interval_ms", 15_000) / 1000
    window = timedelta(seconds=getattr(rt.settings, "campaign_attribution_window_s", 7 * 86_400))
    limit = getattr(rt.settings, "campaign_gauge_limit", 50)
    shown: set[str] = set()
    while True:
        async with rt.db.acquire() as conn:
            active = await campaign_store.active_campaigns(conn, datetime.now(UTC) - window, limit)
            results = {cid: await campaign_store.results(conn, cid) for cid in active}
        for cid in shown - set(active):
            for metric in CAMPAIGN_METRICS:
                CAMPAIGN.remove(cid, metric)
        for cid, r in results.items():
            for metric in CAMPAIGN_METRICS:
                value = r[metric]
                CAMPAIGN.labels(cid, metric).set(float("nan") if value is None else float(value))
        shown = set(active)
        await asyncio.sleep(interval_s)
