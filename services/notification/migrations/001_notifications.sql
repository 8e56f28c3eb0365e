-- notification's own projection of customers (from intake's events) and its messages.

-- Addresses from crm.customer.created.v1 / crm.customer.identifiers_added.v1 (email, phone).
CREATE TABLE notification_contacts (
    customer_id text        NOT NULL,
    kind        text        NOT NULL,  -- email | phone
    value       text        NOT NULL,
    added_at    timestamptz NOT NULL,
    PRIMARY KEY (customer_id, kind, value)
);

-- Consent from crm.consent.changed.v1; channel '*' is every channel.
CREATE TABLE notification_consent (
    customer_id text        NOT NULL,
    purpose     text        NOT NULL,
    channel     text        NOT NULL,
    granted     boolean     NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, purpose, channel)
);

-- The whole preference set from crm.customer.preferences_changed.v1.
CREATE TABLE notification_preferences (
    customer_id text PRIMARY KEY,
    preferences jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- One row per message. idempotency_key = rule|event id|recipient is unique, so a redelivered or
-- replayed event can never make a second message; it is NULL only on a row recording a
-- suppressed duplicate. Status: pending (waiting for the customer's profile) -> scheduled ->
-- sending -> sent | delivered, or retrying -> sending again, or failed (dead letter), or suppressed.
CREATE TABLE notifications (
    notification_id   uuid PRIMARY KEY,
    idempotency_key   text UNIQUE,
    rule              text        NOT NULL,
    source_event_id   uuid        NOT NULL,
    source_event_type text        NOT NULL,
    customer_id       text        NOT NULL,
    audience          text        NOT NULL,
    recipient         text        NOT NULL,
    purpose           text        NOT NULL,
    critical          boolean     NOT NULL,
    data              jsonb       NOT NULL,  -- the source event's data, for the templates
    traceparent       text        NOT NULL,  -- the source event's trace, continued by every decision
    channel           text,
    address           text,
    language          text,
    subject           text,
    body              text,
    status            text        NOT NULL,
    reason            text,
    attempts          integer     NOT NULL DEFAULT 0,
    deliver_at        timestamptz,
    next_attempt_at   timestamptz,
    lease_until       timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    sent_at           timestamptz
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status IN ('pending', 'scheduled', 'retrying');
CREATE INDEX notifications_leases ON notifications (lease_until) WHERE status = 'sending';
CREATE INDEX notifications_customer ON notifications (customer_id, created_at DESC);
CREATE INDEX notifications_status ON notifications (status, created_at DESC);
CREATE INDEX notifications_caps ON notifications (recipient, created_at) WHERE NOT critical;
CREATE INDEX notifications_staff_caps ON notifications (address, created_at) WHERE audience = 'staff';

-- Messages given up on after the last try (or whose outcome a crash made unknowable).
CREATE TABLE notification_dead_letters (
    notification_id uuid PRIMARY KEY REFERENCES notifications (notification_id),
    reason          text        NOT NULL,
    attempts        integer     NOT NULL,
    recorded_at     timestamptz NOT NULL
);
