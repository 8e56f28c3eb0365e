"""eventkit: the event-sourcing library the services are built on.

The CloudEvents envelope codec (envelope), the event store and its outbox relay (eventstore,
outbox), the idempotent consumer and what it accepts (consumer, acceptance), dead letters,
signing and field encryption (signing, crypto), live feeds, telemetry and PostgreSQL helpers.

It names no service and no event type, and imports neither the contracts nor the service
skeleton (tests/plumbing/test_eventkit_imports.py): the event types, topics and Kafka client
options are passed in by the caller (servicekit's wiring, the crm tools).

What answers a difference of the embedded broker from Apache Kafka lives in a module of its own,
named for it (docs/broker.md): partition_ends (ListOffsets answers too low), forgetful_broker (a
broker that forgets what it acknowledged), stale_commits (a commit of the offsets of before a
restart is taken), auto_created_topics (topics made by a metadata request) and no_idempotence
(no idempotent producer).
"""
