"""analytics' own settings, on top of the shared ones."""

from servicekit.settings import Settings


class AnalyticsSettings(Settings):
    kpi_gauge_interval_ms: int = 15_000  # how often the last-24-hours KPI gauges are recomputed
