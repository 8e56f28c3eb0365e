-- The outbox names events by position; its rows are only ever made from the event store's own
-- positions (stored in the same statement, queued again from `events`), and events are never
-- deleted. The foreign key checked that row by row: a trigger and a row lock on the new event
-- (a heap change and a WAL record) for every event stored, for a promise nothing could break.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_position_fkey;
ALTER TABLE outbox_parked DROP CONSTRAINT IF EXISTS outbox_parked_position_fkey;
