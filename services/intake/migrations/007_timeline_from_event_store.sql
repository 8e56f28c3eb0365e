-- intake's own events are on its timeline straight from its event store (servicekit.timeline,
-- own_events), not copied into its timeline table: each of its events is written once, and the
-- timeline reads take each member's newest events from the store by this index, walked backwards
-- as the timeline's own primary key is.
CREATE INDEX events_subject_time ON events (subject, time, event_id);
-- As for the timeline (eventkit's 005_timeline_statistics.sql): events per customer are skewed,
-- and walking the index backwards is right for a customer of any size.
ALTER TABLE events ALTER COLUMN subject SET (n_distinct = -0.001);
-- The copies made before: the reads would otherwise see each of them twice.
DELETE FROM timeline t USING events e WHERE t.event_id = e.event_id;
ANALYZE events;
ANALYZE timeline;
