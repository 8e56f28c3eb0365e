"""notification's projections, applied by the idempotent consumer inside its transaction.

- ProfileProjection: addresses (email, phone) from crm.customer.created.v1 and
  crm.customer.identifiers_added.v1, consent from crm.consent.changed.v1, preferences from
  crm.customer.preferences_changed.v1. Merges are followed through the timeline's aliases
  (the timeline projection records them earlier in the same transaction).
- RulesReactor: for events a rule matches, records one row per (rule, event, recipient) and
  appends its scheduled or suppressed event, in the same transaction that records the event as
  applied. A redelivered event is skipped by the consumer, and the unique key makes a replay
  (or any second path) change nothing.
"""

from collections.abc import Sequence

import asyncpg
from eventkit.envelope import Envelope

from notification import handlers, store
from notification.domain import ALL_CHANNELS
from notification.handlers import NotificationContext

CUSTOMER_CREATED = "crm.customer.created.v1"
IDENTIFIERS_ADDED = "crm.customer.identifiers_added.v1"
CONSENT_CHANGED = "crm.consent.changed.v1"
PREFERENCES_CHANGED = "crm.customer.preferences_changed.v1"


class ProfileProjection:
    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            data = e.data
            if e.type in (CUSTOMER_CREATED, IDENTIFIERS_ADDED):
                await store.add_contacts(conn, data["customer_id"], data["identifiers"], e.time)
            elif e.type == CONSENT_CHANGED:
                channel = data.get("channel") or ALL_CHANNELS
                await store.set_consent(conn, data["customer_id"], data["purpose"], channel, data["granted"], e.time)
            elif e.type == PREFERENCES_CHANGED:
                await store.set_preferences(conn, data["customer_id"], data["preferences"], e.time)


class RulesReactor:
    def __init__(self, ctx: NotificationContext) -> None:
        self.ctx = ctx

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            if e.source != self.ctx.source:  # never react to our own events
                await handlers.plan(conn, self.ctx, e)
