-- One consumer for the timeline and the KPI fold (stream.py, kpi_upgrade.py).

-- Events the retired KPI group (crm-analytics-kpi) folded before the timeline consumer applied
-- them: the one consumer reads them again and must not fold them twice (stream.KpiGate).
CREATE TABLE kpi_pending_skip (
    event_id uuid PRIMARY KEY
);

-- The retirement of the KPI group is done (kpi_upgrade.py): one row, written once.
CREATE TABLE kpi_group_retired (
    retired_at timestamptz NOT NULL DEFAULT now(),
    caught_up  integer NOT NULL,  -- events folded at retirement, the timeline being ahead
    skipped    integer NOT NULL   -- events left in kpi_pending_skip, the KPI group being ahead
);
