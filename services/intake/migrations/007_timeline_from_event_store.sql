-- intake's own events are on its timeline straight from its event store (servicekit.timeline,
-- own_events), not copied into its timeline table: each of its events is written once, and the
-- timeline reads take each member's newest events from the store by this index, walked backwards
-- as the timeline's own primary key is. Partial, over the events on a customer's timeline: its
-- predicate is the reads' own (timeline.ON_TIMELINE_SQL, word for word, so the planner matches
-- it), and a digest is then an index-only scan, as it is of the timeline's key.
CREATE INDEX events_timeline ON events (subject, time, event_id)
    WHERE NOT starts_with(type, 'crm.auth.') AND NOT starts_with(type, 'crm.case.agent_') AND NOT starts_with(type, 'crm.notification.campaign_') AND NOT starts_with(subject, 'campaign:') AND NOT starts_with(subject, 'field:');
-- As for the timeline (eventkit's 005_timeline_statistics.sql): events per customer are skewed,
-- and walking the index backwards is right for a customer of any size.
ALTER TABLE events ALTER COLUMN subject SET (n_distinct = -0.001);
-- The copies made before: the reads would otherwise see each of them twice.
DELETE FROM timeline t USING events e WHERE t.event_id = e.event_id;
-- No ANALYZE here: on a new, empty database it left statistics saying the events table was
-- empty, and under the first batch load PostgreSQL spent 3.6 to 5 times its CPU per event until
-- autovacuum analyzed the table again (BENCHMARKS.md). Autovacuum analyzes it as it grows.
