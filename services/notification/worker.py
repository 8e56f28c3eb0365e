"""The durable delivery loop (a ServiceSpec.background loop).

Each round, in this order:
0. rows from before sealing (migration 003) are sealed under the customer's data key;
1. sends whose lease ran out (the process died between sending and recording) are recovered:
   email is dead-lettered as outcome_unknown (at most once), webhooks/SMS go again with the same
   Idempotency-Key (at least once, receiver deduplicates);
2. pending messages (customer profile not seen yet) are decided again;
3. due messages are claimed with FOR UPDATE SKIP LOCKED, consent is checked once more (a digest
   is rendered now from the messages it still may carry), so are quiet hours (set since the
   message was scheduled, they hold it until they end, and it is scheduled again), their sealed address and text are
   opened (a customer erased meanwhile: suppressed, no_address), and they are marked `sending`
   with a lease and committed BEFORE anything goes on the wire; the opened text stays in memory;
4. the sends run concurrently; each outcome (sent/delivered, or failed with the next try after
   exponential backoff with jitter, moved out of a customer's quiet hours, or dead-lettered after
   the last try) is recorded with its event in one transaction.
Everything lives in the database, so a restart loses no scheduled message or retry. The key
vault not answering is waited out like the database (nothing is claimed without its keys).
"""

import asyncio
import logging

import asyncpg
from eventkit import telemetry
from eventkit.crash_points import crash_point
from eventkit.db import TRANSIENT_ERRORS
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from servicekit.keyring import KeysUnavailable

from notification import digests, domain, erasure, handlers, messages, outcomes, store
from notification.context import NotificationContext
from notification.delivery import Accepted, DeliveryError, Message, Sender
from notification.store import Row

log = logging.getLogger(__name__)
BATCH = 50


async def deliver_due(pool: asyncpg.Pool, ctx: NotificationContext, sender: Sender, limit: int = BATCH) -> int:
    """One round; returns how many rows it worked on (0: nothing was due)."""
    async with pool.acquire() as conn:
        worked = await _seal_legacy(conn, ctx, limit)
        worked += await _recover(conn, ctx, limit)
        worked += await _decide_pending(conn, ctx, limit)
        claimed = await _claim(conn, ctx, limit)
    if not claimed:
        return worked
    await asyncio.gather(*(_send_and_record(pool, ctx, sender, row, message) for row, message in claimed))
    return worked + len(claimed)


async def _seal_legacy(conn: asyncpg.Connection, ctx: NotificationContext, limit: int) -> int:
    async with conn.transaction():
        return await erasure.seal_legacy(conn, ctx, limit)


async def _recover(conn: asyncpg.Connection, ctx: NotificationContext, limit: int) -> int:
    async with conn.transaction():
        rows = await store.expired_sends(conn, ctx.clock(), limit)
        for row in rows:
            log.warning("send of a %s message interrupted (lease ran out); outcome unknown", row.channel)
            await outcomes.recover_interrupted(conn, ctx, row)
        return len(rows)


async def _decide_pending(conn: asyncpg.Connection, ctx: NotificationContext, limit: int) -> int:
    async with conn.transaction():
        rows = await store.due(conn, ["pending"], ctx.clock(), limit)
        for row in rows:
            await handlers.decide(conn, ctx, row)
        return len(rows)


async def _claim(conn: asyncpg.Connection, ctx: NotificationContext, limit: int) -> list[tuple[Row, Message]]:
    async with conn.transaction():
        now = ctx.clock()
        claimed = []
        for row in await store.due(conn, ["scheduled", "retrying"], now, limit):
            refusal, quiet_until = await outcomes.before_send(conn, ctx, row)
            if refusal is not None:
                await messages.suppress(conn, ctx, row, refusal, row.channel)
                continue
            if quiet_until is not None:
                await outcomes.hold_for_quiet_hours(conn, ctx, row, quiet_until)
                continue
            if row.rule == domain.DIGEST_RULE and not await digests.prepare_digest(conn, ctx, row):
                continue
            message = await outcomes.message_of(ctx, row)
            if message is None:
                await messages.suppress(conn, ctx, row, "no_address", row.channel)
                continue
            row.attempts += 1
            row.status = "sending"
            await store.update(
                conn, row.notification_id, now, status="sending", attempts=row.attempts,
                lease_until=now + ctx.send_lease,
            )  # fmt: skip
            claimed.append((row, message))
        return claimed


async def send(
    ctx: NotificationContext, sender: Sender, row: Row, message: Message, tracer: trace.Tracer | None = None
) -> Accepted | DeliveryError:
    """One delivery attempt, traced under the event that caused it (the row's traceparent), so the
    outgoing request's span and a webhook receiver's own spans join that event's trace."""
    parent = telemetry.context_from_traceparent(row.traceparent)
    with (tracer or telemetry.tracer()).start_as_current_span("notification send", context=parent) as span:
        span.set_attributes({"crm.channel": message.channel, "crm.rule": message.rule, "crm.attempt": row.attempts})
        try:
            # Well inside the lease, so a slow receiver is a timeout here, not a "crashed" send.
            async with asyncio.timeout(ctx.send_lease.total_seconds() / 2):
                return await sender.send(message)
        except DeliveryError as exc:
            span.set_status(StatusCode.ERROR, exc.reason)
            return exc
        except TimeoutError:
            span.set_status(StatusCode.ERROR, "timeout")
            return DeliveryError("timeout")


async def _send_and_record(
    pool: asyncpg.Pool, ctx: NotificationContext, sender: Sender, row: Row, message: Message
) -> None:
    outcome = await send(ctx, sender, row, message)
    crash_point("notification.after_send")  # recovery tests: die between the send and its record
    async with pool.acquire() as conn, conn.transaction():
        current = await store.lock(conn, row.notification_id)
        if current is None or current.status != "sending" or current.attempts != row.attempts:
            return  # the lease ran out meanwhile and recovery already decided; keep its record
        if isinstance(outcome, Accepted):
            await outcomes.record_success(conn, ctx, row, outcome)
        else:
            await outcomes.record_failure(conn, ctx, row, outcome)


async def run(
    ctx: NotificationContext, pool: asyncpg.Pool, sender: Sender, poll_interval_s: float, batch: int = BATCH
) -> None:
    """Forever: deliver what is due (up to `batch` sends at once per round); sleep when nothing was."""
    while True:
        try:
            worked = await deliver_due(pool, ctx, sender, batch)
        except TRANSIENT_ERRORS as exc:
            log.warning("database unavailable for deliveries: %s", type(exc).__name__)
            worked = 0
        except KeysUnavailable as exc:
            log.warning("key vault unavailable for deliveries: %s", exc)
            worked = 0
        if not worked:
            await asyncio.sleep(poll_interval_s)
