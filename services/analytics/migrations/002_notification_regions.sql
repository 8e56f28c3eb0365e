-- Notification KPIs by region: one row per notification event, with its customer's region, so
-- a region filter applies to them as to interactions and cases. Rows whose region was not known
-- yet ('unknown') are completed when the customer's region arrives, as kpi_cases and kpi_surveys.
CREATE TABLE kpi_notification_events (
    event_id    uuid PRIMARY KEY,
    customer_id text,                  -- null for the counts carried over from kpi_notifications
    at          timestamptz NOT NULL,
    channel     text        NOT NULL,
    region      text        NOT NULL,
    status      text        NOT NULL   -- scheduled | sent | delivered | failed | retried | suppressed
);
CREATE INDEX kpi_notification_events_at ON kpi_notification_events (at);
CREATE INDEX kpi_notification_events_customer ON kpi_notification_events (customer_id) WHERE region = 'unknown';

-- The hourly counts folded so far become rows of an unknown region.
INSERT INTO kpi_notification_events (event_id, customer_id, at, channel, region, status)
SELECT gen_random_uuid(), NULL, bucket, channel, 'unknown', status
FROM kpi_notifications, generate_series(1, count);
DROP TABLE kpi_notifications;
