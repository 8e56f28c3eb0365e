-- intake's own state, written in the same transaction as the events that describe it.

-- A merged customer points at its final survivor; identifiers always point at live customers.
CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    merged_into text REFERENCES customers (customer_id),
    merged_at   timestamptz
);
CREATE INDEX customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL;

-- Normalised identifiers; one customer per identifier. channel is '' except for external ids.
CREATE TABLE customer_identifiers (
    kind        text NOT NULL,
    channel     text NOT NULL DEFAULT '',
    value       text NOT NULL,
    customer_id text NOT NULL REFERENCES customers (customer_id),
    PRIMARY KEY (kind, channel, value)
);
CREATE INDEX customer_identifiers_customer ON customer_identifiers (customer_id);

-- Consent per purpose and channel ('*' = every channel). Absent = never asked.
CREATE TABLE customer_consent (
    customer_id text        NOT NULL REFERENCES customers (customer_id),
    purpose     text        NOT NULL,
    channel     text        NOT NULL,
    granted     boolean     NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, purpose, channel)
);

CREATE TABLE customer_preferences (
    customer_id text PRIMARY KEY REFERENCES customers (customer_id),
    preferences jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- First answers to idempotent requests: an Idempotency-Key header or a client event id.
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text        NOT NULL,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
