-- Campaigns (issue 28): notification announces them, analytics fixes their audience when they are
-- due and attributes the responses. Fed by the KPI stream (campaign_projection.py).

CREATE TABLE campaigns (
    campaign_id   text PRIMARY KEY,
    name          text        NOT NULL,
    audience      jsonb       NOT NULL,
    purpose       text        NOT NULL,
    send_at       timestamptz NOT NULL,
    status        text        NOT NULL,  -- notification's status; 'invalid': an audience analytics cannot resolve
    created_at    timestamptz NOT NULL,
    resolved_at   timestamptz,           -- when the audience was fixed; null: not yet
    audience_size integer
);
CREATE INDEX campaigns_due ON campaigns (send_at) WHERE resolved_at IS NULL;

-- The fixed audience: resolving again (redelivery, restart) finds it here and emits nothing new.
CREATE TABLE campaign_audience (
    campaign_id text NOT NULL,
    customer_id text NOT NULL,
    PRIMARY KEY (campaign_id, customer_id)
);

-- The channels each customer has used (the channel_used filter), from their interactions since
-- this migration; merges move them to the survivor.
CREATE TABLE customer_channels (
    customer_id text NOT NULL,
    channel     text NOT NULL,
    PRIMARY KEY (customer_id, channel)
);

-- Erased customers (and the ids merged into them): never in an audience.
CREATE TABLE erased_customers (
    customer_id text PRIMARY KEY
);

-- notification's per-customer decisions that carry a campaign_id; sent and delivered are touches.
CREATE TABLE campaign_decisions (
    event_id    uuid PRIMARY KEY,
    campaign_id text        NOT NULL,
    customer_id text        NOT NULL,
    channel     text        NOT NULL,
    status      text        NOT NULL,  -- scheduled | sent | delivered | failed | retried | suppressed
    at          timestamptz NOT NULL
);
CREATE INDEX campaign_decisions_campaign ON campaign_decisions (campaign_id);
CREATE INDEX campaign_decisions_touches ON campaign_decisions (customer_id, at) WHERE status IN ('sent', 'delivered');

-- Inbound interactions within the attribution window, so that a touch applied after its answer
-- (topics are not ordered with each other) still finds it. Older rows are deleted by the timer.
CREATE TABLE campaign_inbound (
    event_id    uuid PRIMARY KEY,
    customer_id text        NOT NULL,
    at          timestamptz NOT NULL,  -- occurred_at
    event_time  timestamptz NOT NULL,  -- the event's time: the response's follows it
    channel     text        NOT NULL,
    kind        text        NOT NULL,
    amount      numeric,
    named       text                   -- metadata.campaign_id
);
CREATE INDEX campaign_inbound_customer ON campaign_inbound (customer_id, at);

-- Attributed inbound interactions (each one at most once, to one campaign).
CREATE TABLE campaign_responses (
    interaction_event_id uuid PRIMARY KEY,
    campaign_id          text        NOT NULL,
    customer_id          text        NOT NULL,
    channel              text        NOT NULL,  -- the channel the campaign reached them on
    kind                 text        NOT NULL,
    amount               numeric,
    attributed_by        text        NOT NULL,  -- metadata | window
    at                   timestamptz NOT NULL
);
CREATE INDEX campaign_responses_campaign ON campaign_responses (campaign_id);

-- Marketing consent withdrawals within the window, for a touch applied after them (as campaign_inbound).
CREATE TABLE campaign_withdrawals (
    event_id    uuid PRIMARY KEY,
    customer_id text        NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX campaign_withdrawals_customer ON campaign_withdrawals (customer_id, at);

-- Marketing consent withdrawn within the attribution window of a campaign's last touch.
CREATE TABLE campaign_unsubscribes (
    event_id    uuid PRIMARY KEY,
    campaign_id text        NOT NULL,
    customer_id text        NOT NULL,
    channel     text        NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX campaign_unsubscribes_campaign ON campaign_unsubscribes (campaign_id);
