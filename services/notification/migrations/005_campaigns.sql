-- Campaigns (docs/campaigns.md): a campaign, its resolved audience (one row per targeted
-- customer) and, on each of its messages, the campaign id.

CREATE TABLE campaigns (
    campaign_id   text PRIMARY KEY,
    name          text        NOT NULL,
    request       jsonb       NOT NULL,  -- the request as normalised: a retry with the same id compares to it
    audience      jsonb       NOT NULL,
    purpose       text        NOT NULL,
    templates     jsonb       NOT NULL,
    send_at       timestamptz NOT NULL,
    created_by    text        NOT NULL,
    status        text        NOT NULL,  -- scheduled | sending | paused | cancelled | completed
    reason        text,
    audience_size integer,               -- from analytics' campaign_audience_resolved (every part)
    parts         integer,
    parts_seen    integer[]   NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX campaigns_listing ON campaigns (created_at DESC, campaign_id DESC);

-- One row per (campaign, customer): the paced sender turns pending targets into messages, a
-- batch per transaction, and marks them decided in that same transaction, so a restart between
-- batches neither loses nor repeats one.
CREATE TABLE campaign_targets (
    campaign_id text NOT NULL REFERENCES campaigns (campaign_id),
    customer_id text NOT NULL,
    state       text NOT NULL DEFAULT 'pending',  -- pending | decided
    PRIMARY KEY (campaign_id, customer_id)
);
CREATE INDEX campaign_targets_pending ON campaign_targets (campaign_id, customer_id) WHERE state = 'pending';

ALTER TABLE notifications ADD COLUMN campaign_id text;
CREATE INDEX notifications_campaign ON notifications (campaign_id, status) WHERE campaign_id IS NOT NULL;
