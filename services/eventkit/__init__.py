"""Shared plumbing for the four services: envelope codec, event store, outbox relay,
idempotent consumer, dead letters, the timeline projection, telemetry and settings.

Nothing here knows about a particular service's domain.
"""
