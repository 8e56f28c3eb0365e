"""notification's policies: they react to other services' events by deciding messages (commands
on notification's own messages), inside the idempotent consumer's transaction.

- RulesPolicy: for events a rule matches, records one row per (rule, event, recipient) and
  appends its scheduled or suppressed event, in the same transaction that records the event as
  applied. A redelivered event is skipped by the consumer, and the unique key makes a replay
  (or any second path) change nothing.
- ErasurePolicy: crm.customer.erased.v1 forgets the erased ids' addresses, consent and
  preferences and masks their messages; those not sent yet end suppressed (no_address).

The vault not answering (KeysUnavailable) fails the batch as a transient error: it is retried,
never dead-lettered, and never read as an erasure.
"""

from collections.abc import Sequence

import asyncpg
from eventkit.envelope import Envelope

from contracts.events import CUSTOMER_ERASED
from notification import erasure, handlers, privacy
from notification.context import NotificationContext


class RulesPolicy:
    def __init__(self, ctx: NotificationContext) -> None:
        self.ctx = ctx

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        with privacy.retry_while_vault_unavailable():
            for e in events:
                if e.source != self.ctx.source:  # never react to our own events
                    await handlers.plan(conn, self.ctx, e)


class ErasurePolicy:
    """Applied last (after the profile projection and the rules policy), so a batch holding a
    customer's events and their erasure ends erased whatever the order."""

    def __init__(self, ctx: NotificationContext) -> None:
        self.ctx = ctx

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            if e.type == CUSTOMER_ERASED:
                ids = [str(i) for i in e.data.get("erased_ids") or [e.data["customer_id"]]]
                await erasure.erase(conn, self.ctx, ids)
