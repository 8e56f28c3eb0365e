-- Shared plumbing tables, created in every service's own database.

-- The event store: this service's own events, append-only.
CREATE TABLE events (
    position     bigserial PRIMARY KEY,
    stream_id    text        NOT NULL,
    version      integer     NOT NULL,
    event_id     uuid        NOT NULL UNIQUE,
    type         text        NOT NULL,
    source       text        NOT NULL,
    subject      text        NOT NULL,
    time         timestamptz NOT NULL,
    traceparent  text        NOT NULL,
    topic        text        NOT NULL,
    data         jsonb       NOT NULL,
    UNIQUE (stream_id, version)
);

-- Transactional outbox: positions of events committed but not yet acknowledged by Kafka.
CREATE TABLE outbox (
    position bigint PRIMARY KEY REFERENCES events (position)
);

-- Highest offset the broker acknowledged per partition: how the relay notices a broker that forgot.
CREATE TABLE relay_watermarks (
    topic           text    NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint  NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);

-- Idempotent consumer: one row per event applied to this service's projections, written in
-- the same transaction as the projection change.
CREATE TABLE applied_events (
    event_id   uuid PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Messages this service's consumer gave up on (also sent to crm.deadletter.v1), with the
-- original bytes so that `crm redrive` can put them back once the cause is fixed.
CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    event_id        text,
    event_type      text,
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    message_key     bytea,
    message_value   bytea,
    message_headers jsonb       NOT NULL DEFAULT '[]',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    redriven_at     timestamptz
);

-- The synchronized customer timeline: every event of every topic, by customer.
CREATE TABLE timeline (
    customer_id text        NOT NULL,
    time        timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    type        text        NOT NULL,
    source      text        NOT NULL,
    data        jsonb       NOT NULL,
    PRIMARY KEY (customer_id, time, event_id)
);

-- Merged customer id -> surviving customer id (always the final survivor).
CREATE TABLE customer_aliases (
    merged_id   text PRIMARY KEY,
    survivor_id text NOT NULL
);
CREATE INDEX customer_aliases_survivor ON customer_aliases (survivor_id);
