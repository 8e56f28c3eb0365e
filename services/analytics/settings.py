"""analytics' own settings, on top of the shared ones."""

from servicekit.settings import Settings


class AnalyticsSettings(Settings):
    kpi_gauge_interval_ms: int = 15_000  # how often the last-24-hours KPI gauges are recomputed
    campaign_attribution_window_s: int = 7 * 86_400  # CAMPAIGN_ATTRIBUTION_WINDOW_S: last touch to response
    campaign_timer_interval_ms: int = 1_000  # how often campaigns scheduled for later are checked for due
    campaign_gauge_limit: int = 50  # campaigns with result gauges at most (the newest active ones)
