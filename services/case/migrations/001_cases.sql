-- case's own state. The truth is the case streams in `events`; these tables are derived from
-- them, in the same transaction as every append.

-- The case list read model: one row per case, rewritten from the aggregate state on every append.
-- Writers lock the row (SELECT ... FOR UPDATE) before they load the case, so commands, rules and
-- SLA timers on one case take turns.
CREATE TABLE cases (
    case_id           text PRIMARY KEY,
    customer_id       text        NOT NULL,
    version           integer     NOT NULL,
    type              text        NOT NULL,
    priority          text        NOT NULL,
    status            text        NOT NULL,
    team              text        NOT NULL,
    queue             text        NOT NULL,
    owner             text,
    title             text,
    opened_at         timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    first_response_at timestamptz,
    resolved_at       timestamptz,
    closed_at         timestamptz,
    breached          boolean     NOT NULL DEFAULT false,
    escalated         boolean     NOT NULL DEFAULT false,
    awaiting_survey   boolean     NOT NULL DEFAULT false
);
CREATE INDEX cases_customer_open ON cases (customer_id, type) WHERE status IN ('new', 'open', 'pending');
CREATE INDEX cases_customer_survey ON cases (customer_id, resolved_at) WHERE awaiting_survey;
CREATE INDEX cases_listing ON cases (opened_at DESC, case_id DESC);
CREATE INDEX cases_status ON cases (status, opened_at DESC);
CREATE INDEX cases_owner ON cases (owner, opened_at DESC);

-- Durable SLA timers: when to look at a case again. A row is fired in the same transaction as
-- its sla event; unfired rows are recomputed from the events on every append.
CREATE TABLE case_timers (
    case_id  text        NOT NULL,
    level    text        NOT NULL,  -- warning | breach
    target   text        NOT NULL,  -- first_response | resolution
    due_at   timestamptz NOT NULL,
    fired_at timestamptz,
    PRIMARY KEY (case_id, level, target)
);
CREATE INDEX case_timers_due ON case_timers (due_at) WHERE fired_at IS NULL;

-- Customers' VIP flag, from crm.customer.preferences_changed.v1.
CREATE TABLE customer_flags (
    customer_id text PRIMARY KEY,
    vip         boolean     NOT NULL,
    updated_at  timestamptz NOT NULL
);
