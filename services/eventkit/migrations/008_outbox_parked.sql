-- When each outbox row was queued: the age of the row at the head of the queue is how long
-- publication has been held up (crm_outbox_oldest_age_seconds, /readyz).
ALTER TABLE outbox ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now();

-- Events the broker refused for good (too large, corrupt...): taken out of the queue so that the
-- relay goes on with the others, kept here until an operator puts them back (`crm unpark`).
-- A parked event is stored and on this service's own projections, but not on the topic.
CREATE TABLE outbox_parked (
    position  bigint PRIMARY KEY REFERENCES events (position),
    parked_at timestamptz NOT NULL DEFAULT now(),
    reason    text        NOT NULL,  -- the error's class name, e.g. MessageSizeTooLargeError
    detail    text        NOT NULL   -- its message (no event data)
);
