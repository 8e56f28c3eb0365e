"""KPI gauges for the customer-service dashboard: the last 24 hours, refreshed in the background.

Labels are channels, KPI names and teams only; nothing personal, and never an owner (agents are
many and people: their rows are in the API's group_by=owner answer only). Teams are few and
defined by admins; at most TEAM_GAUGE_LIMIT of them (the busiest) have series. The campaign gauges are labelled by
campaign id, bounded: only the newest CAMPAIGN_GAUGE_LIMIT campaigns still sending or within their
attribution window have them, and a campaign's series are removed when it drops out.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Gauge
from servicekit.app import Runtime

from analytics import campaign_store, report_store, store
from contracts.events import CHANNELS

KPI = Gauge("crm_kpi_last_24h", "Customer-service KPIs over the last 24 hours", ["kpi"])
CAMPAIGN = Gauge(
    "crm_campaign_results",
    "Results of the active campaigns: sent, responded, response_rate, conversions, revenue, unsubscribed",
    ["campaign_id", "metric"],
)
CAMPAIGN_METRICS = ("sent", "delivered", "responded", "response_rate", "conversions", "revenue", "unsubscribed")
KPI_BY_CHANNEL = Gauge("crm_kpi_interactions_last_24h", "Interactions in the last 24 hours by channel", ["channel"])
KPI_BY_TEAM = Gauge(
    "crm_kpi_by_team_last_24h", "Case KPIs over the last 24 hours by team (GET /v1/kpis?group_by=team)", ["team", "kpi"]
)
TEAM_GAUGE_LIMIT = 50
TEAM_KPIS = (
    "cases_opened", "cases_resolved", "first_response_mean_seconds", "handle_mean_seconds",
    "resolution_mean_seconds", "first_contact_resolution_pct", "sla_compliance_pct", "csat_mean",
)  # fmt: skip


def team_values(group: dict[str, Any]) -> dict[str, float | None]:
    """The by-team gauges of one row of report_store.grouped_kpis."""
    cases, csat = group["cases"], group["csat"]
    return {
        "cases_opened": cases["opened"],
        "cases_resolved": cases["resolved"],
        "first_response_mean_seconds": cases["first_response_seconds"]["mean"],
        "handle_mean_seconds": cases["handle_seconds"]["mean"],
        "resolution_mean_seconds": cases["resolution_seconds"]["mean"],
        "first_contact_resolution_pct": cases["first_contact_resolution_pct"],
        "sla_compliance_pct": cases["sla_compliance_pct"],
        "csat_mean": csat["mean"],
    }


async def refresh_kpi_gauges(rt: Runtime) -> None:
    interval_s = getattr(rt.settings, "kpi_gauge_interval_ms", 15_000) / 1000
    teams_shown: set[str] = set()
    while True:
        end = datetime.now(UTC)
        q = store.KpiQuery(end - timedelta(hours=24), end, "hour")
        async with rt.db.acquire() as conn:
            totals = (await store.kpis(conn, q))["totals"]
            counts = await store.interactions_by_channel(conn, end - timedelta(hours=24))
            by_team = await report_store.grouped_kpis(conn, q, report_store.GroupBy("team"))
        teams_shown = _set_team_gauges(by_team, teams_shown)
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


def _set_team_gauges(groups: list[dict[str, Any]], shown: set[str]) -> set[str]:
    """Set the by-team gauges of the busiest teams; remove those of teams no longer among them."""
    named = [g for g in groups if g["group"] is not None]
    named.sort(key=lambda g: -(g["cases"]["opened"] + g["cases"]["resolved"]))
    rows = {g["group"]: team_values(g) for g in named[:TEAM_GAUGE_LIMIT]}
    for team in shown - rows.keys():
        for kpi in TEAM_KPIS:
            KPI_BY_TEAM.remove(team, kpi)
    for team, values in rows.items():
        for kpi, value in values.items():
            KPI_BY_TEAM.labels(team, kpi).set(float("nan") if value is None else float(value))
    return set(rows)


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
