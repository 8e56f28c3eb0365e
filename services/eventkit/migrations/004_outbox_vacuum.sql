-- The outbox is a queue: every row is deleted within moments of its insert. Until VACUUM removes
-- them, the dead rows are walked by every poll (the relay's ordered fetch) and every count: after
-- a burst of 150,000 events that was ~2 ms of PostgreSQL CPU per poll, for the minutes the
-- default thresholds (20 % of a table whose live size is ~0) and cost delays left it unvacuumed.
-- So it is vacuumed whenever autovacuum visits the database and it has 1,000 dead rows, unthrottled.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
