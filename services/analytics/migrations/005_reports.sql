-- Reports (issue 29): what the per-case report and the grouped KPIs need beyond 001/003.
-- Every column and table here is folded from case events by the KPI stream (projections.py), so
-- `crm replay analytics` rebuilds it; rows folded before this migration get these only on a replay.

-- The case's owner (its last assignment's; null when unassigned), when it was closed, which SLA
-- target was breached, and its last CSAT score.
ALTER TABLE kpi_cases ADD COLUMN owner text;
ALTER TABLE kpi_cases ADD COLUMN closed_at timestamptz;
ALTER TABLE kpi_cases ADD COLUMN first_response_breached boolean NOT NULL DEFAULT false;
ALTER TABLE kpi_cases ADD COLUMN resolution_breached boolean NOT NULL DEFAULT false;
ALTER TABLE kpi_cases ADD COLUMN csat integer;
-- The CSV report pages through a range in (opened_at, case_id) order.
CREATE INDEX kpi_cases_opened_keyset ON kpi_cases (opened_at, case_id);

-- A CSAT answer's case, so grouped KPIs put it in its case's owner, field or tag row.
ALTER TABLE kpi_surveys ADD COLUMN case_id text;

-- The non-personal typed field values of each case (crm.case.fields_set.v1 `values`; the sealed
-- `personal` part is never stored here), as JSON and as the text reports group by.
CREATE TABLE case_field_values (
    case_id    text NOT NULL,
    name       text NOT NULL,
    value      jsonb NOT NULL,
    value_text text NOT NULL,
    PRIMARY KEY (case_id, name)
);
CREATE INDEX case_field_values_name ON case_field_values (name, value_text);

-- The tags of each case (crm.case.tags_changed.v1 `tags`: the whole set after each change).
CREATE TABLE case_tags (
    case_id text NOT NULL,
    tag     text NOT NULL,
    PRIMARY KEY (case_id, tag)
);
CREATE INDEX case_tags_tag ON case_tags (tag);

-- Case field definitions (crm.case.field_defined.v1): the CSV's field columns and their labels;
-- a field whose latest definition is personal is never reported.
CREATE TABLE case_field_definitions (
    name     text PRIMARY KEY,
    label    text,
    personal boolean NOT NULL,
    version  integer NOT NULL
);
