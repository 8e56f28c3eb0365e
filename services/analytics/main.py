"""analytics: wiring. One consumer (group crm-analytics) feeds the timeline and, in the same
transaction per batch, the KPI fold and the campaign results (stream.py)."""

from pathlib import Path

from eventkit.eventstore import EventStore
from servicekit.app import ServiceSpec, create_app, serve

from analytics.api import router
from analytics.campaign_api import router as campaign_router
from analytics.campaign_projection import run_campaign_timer
from analytics.kpi_upgrade import retire_kpi_group
from analytics.metrics import refresh_campaign_gauges, refresh_kpi_gauges
from analytics.report_api import router as report_router
from analytics.settings import AnalyticsSettings
from analytics.stream import KpiGate, kpi_subscribers

settings = AnalyticsSettings.for_service("analytics")
events = EventStore("analytics", max_event_bytes=settings.event_max_bytes)

app = create_app(
    ServiceSpec(
        name="analytics",
        title="crm analytics",
        description="Customer-service KPIs, customer value and churn risk, back onto the timeline.",
        subscribers=[KpiGate(kpi_subscribers(events, settings))],
        routers=[router, campaign_router, report_router],
        migrations=[Path(__file__).parent / "migrations"],
        before_consumer=[retire_kpi_group],
        background=[refresh_kpi_gauges, run_campaign_timer, refresh_campaign_gauges],
    ),
    settings,
    None,
)

if __name__ == "__main__":
    serve(app)
