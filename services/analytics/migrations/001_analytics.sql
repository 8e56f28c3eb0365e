-- analytics' own projections, fed by its faust agent (consumer group crm-analytics-kpi).

-- Idempotent consumer record of the KPI stream (the timeline consumer keeps applied_events).
CREATE TABLE kpi_applied_events (
    event_id   uuid PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE analytics_aliases (
    merged_id   text PRIMARY KEY,
    survivor_id text NOT NULL
);

-- One row per customer: the folded profile and the last published insight.
CREATE TABLE analytics_customers (
    customer_id         text PRIMARY KEY,
    first_seen          timestamptz NOT NULL,
    region              text,
    vip                 boolean     NOT NULL DEFAULT false,
    last_interaction_at timestamptz,
    interactions        integer     NOT NULL DEFAULT 0,
    purchases           integer     NOT NULL DEFAULT 0,
    purchase_value      numeric     NOT NULL DEFAULT 0,
    complaints          integer     NOT NULL DEFAULT 0,
    complaint_times     timestamptz[] NOT NULL DEFAULT '{}',
    sla_breaches        integer     NOT NULL DEFAULT 0,
    open_cases          integer     NOT NULL DEFAULT 0,
    last_csat           integer,
    risk_score          integer     NOT NULL DEFAULT 0,
    risk_band           text,
    risk_reasons        jsonb       NOT NULL DEFAULT '[]',
    segment             text,
    as_of               timestamptz NOT NULL
);

-- Interaction volume per hour of occurrence, by channel, region, kind and direction.
CREATE TABLE kpi_interactions (
    bucket    timestamptz NOT NULL,
    channel   text        NOT NULL,
    region    text        NOT NULL,
    kind      text        NOT NULL,
    direction text        NOT NULL,
    count     bigint      NOT NULL,
    PRIMARY KEY (bucket, channel, region, kind, direction)
);

-- Which channel an interaction came on, so a case knows the channel that opened it.
CREATE TABLE interaction_channels (
    event_id uuid PRIMARY KEY,
    channel  text NOT NULL
);

-- One row per case with the moments the KPIs are made of.
CREATE TABLE kpi_cases (
    case_id           text PRIMARY KEY,
    customer_id       text        NOT NULL,
    type              text        NOT NULL,
    priority          text        NOT NULL,
    channel           text        NOT NULL,  -- of the interaction that opened it; 'agent' if none
    region            text        NOT NULL,
    status            text        NOT NULL,
    opened_by         text,                  -- that interaction's event id
    opened_at         timestamptz NOT NULL,
    first_response_at timestamptz,
    resolved_at       timestamptz,
    reopened          boolean     NOT NULL DEFAULT false,
    breached          boolean     NOT NULL DEFAULT false,
    inbound_links     integer     NOT NULL DEFAULT 0
);
CREATE INDEX kpi_cases_opened ON kpi_cases (opened_at);
CREATE INDEX kpi_cases_resolved ON kpi_cases (resolved_at);
-- Topics are not ordered with each other: a case may arrive before the interaction that opened
-- it, or before its customer's region. These find the rows to complete when those arrive.
CREATE INDEX kpi_cases_opened_by ON kpi_cases (opened_by) WHERE channel = 'unknown';
CREATE INDEX kpi_cases_customer ON kpi_cases (customer_id) WHERE region = 'unknown';

CREATE TABLE kpi_surveys (
    event_id    uuid PRIMARY KEY,
    customer_id text        NOT NULL,
    kind        text        NOT NULL,  -- csat (case follow-up) | nps
    score       integer     NOT NULL,
    at          timestamptz NOT NULL,
    channel     text        NOT NULL,
    region      text        NOT NULL,
    case_type   text,
    priority    text
);
CREATE INDEX kpi_surveys_at ON kpi_surveys (at);
CREATE INDEX kpi_surveys_customer ON kpi_surveys (customer_id) WHERE region = 'unknown';

-- Notification decisions per hour, by channel and status.
CREATE TABLE kpi_notifications (
    bucket  timestamptz NOT NULL,
    channel text        NOT NULL,
    status  text        NOT NULL,
    count   bigint      NOT NULL,
    PRIMARY KEY (bucket, channel, status)
);
