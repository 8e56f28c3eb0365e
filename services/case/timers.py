"""Durable SLA timers: the case_timers table says when to look at a case again.

The loop takes cases with a due, unfired timer, locks each case row (SKIP LOCKED: another
instance or an agent's command has it; look again next round), rebuilds the case from its
events, and appends the warnings, breaches and escalation that are due, and the auto close of a
case resolved long enough ago, marking the timers fired, in one transaction. A timer that fell
due while the service was down fires on the first round after the restart; the alerts the events
already hold are never sent again, so each fires once (and a closed case closes no more).
"""

import asyncio
import logging
from datetime import datetime

import asyncpg
from eventkit.db import TRANSIENT_ERRORS
from eventkit.telemetry import current_traceparent

from case import domain, handlers, sla, store
from case.context import CaseContext
from contracts.case import CASE_ESCALATED

log = logging.getLogger(__name__)
BATCH = 100


async def fire_due(pool: asyncpg.Pool, ctx: CaseContext, limit: int = BATCH) -> int:
    """One round: fire every alert and auto close due now; return how many SLA events and closes
    were stored."""
    now = ctx.clock()
    async with pool.acquire() as conn:
        case_ids = await store.due_timer_cases(conn, now, limit)
        fired = 0
        for case_id in case_ids:
            try:
                async with conn.transaction():
                    fired += await _fire_case(conn, ctx, case_id, now)
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                # One broken case must not hold up every other case's timers.
                log.exception("SLA timers of a case failed; trying again next round")
        return fired


async def _fire_case(conn: asyncpg.Connection, ctx: CaseContext, case_id: str, now: datetime) -> int:
    if not await store.lock_case(conn, case_id, skip_locked=True):
        return 0
    state, _ = await handlers.load(conn, ctx, case_id)
    due = sla.due_alerts(state, ctx.policy, ctx.calendar, now)
    drafts = sla.fire_alerts(state, due, ctx.policy, ctx.rules)
    # Decided on the same state as the alerts: one append; the close then drops its timer row.
    drafts += domain.auto_close(state, ctx.rules, now)
    if drafts:
        await handlers.commit(conn, ctx, state, drafts, current_traceparent(), fired=due)
    else:
        # Stale timer (the case moved on): re-derive the schedule from the events.
        await store.sync_timers(conn, case_id, handlers.scheduled_timers(state, ctx), (), now)
    return sum(1 for d in drafts if d.type != CASE_ESCALATED)


async def run(ctx: CaseContext, pool: asyncpg.Pool, poll_interval_s: float) -> None:
    """Forever: fire what is due; sleep when nothing was."""
    while True:
        if not await fire_due(pool, ctx):
            await asyncio.sleep(poll_interval_s)
