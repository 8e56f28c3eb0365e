"""analytics: wiring. The timeline and the KPI stream (stream.py: KPIs and insights) are both
eventkit consumers, in consumer groups of their own, in the same process."""

from pathlib import Path

from servicekit.app import ServiceSpec, create_app, serve

from analytics.api import router
from analytics.campaign_api import router as campaign_router
from analytics.campaign_projection import run_campaign_timer
from analytics.metrics import refresh_campaign_gauges, refresh_kpi_gauges
from analytics.report_api import router as report_router
from analytics.settings import AnalyticsSettings
from analytics.stream import run_kpi_stream

app = create_app(
    ServiceSpec(
        name="analytics",
        title="crm analytics",
        description="Customer-service KPIs, customer value and churn risk, back onto the timeline.",
        routers=[router, campaign_router, report_router],
        migrations=[Path(__file__).parent / "migrations"],
        background=[run_kpi_stream, refresh_kpi_gauges, run_campaign_timer, refresh_campaign_gauges],
    ),
    AnalyticsSettings.for_service("analytics"),
    None,
)

if __name__ == "__main__":
    serve(app)
