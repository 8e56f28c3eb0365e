"""Intake's use cases: resolve the customer, decide the events, append them, in one transaction."""

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from eventkit.envelope import new_event
from eventkit.eventstore import Append, ConcurrencyError, EventStore
from eventkit.telemetry import current_traceparent

from contracts.topics import INTAKE
from intake import domain, store

ATTEMPTS = 5


@dataclass(frozen=True)
class Accepted:
    customer_id: str
    event_id: str  # the interaction's event
    event_ids: list[str]  # everything this request stored, in order


def stream_of(customer_id: str) -> str:
    return f"customer-{customer_id}"


async def record_interaction(
    pool: asyncpg.Pool, events: EventStore, source: str, cmd: domain.RecordInteraction
) -> Accepted:
    domain.check_occurred_at(cmd.occurred_at, datetime.now(UTC))
    email = domain.normalise_email(cmd.email) if cmd.email is not None else None
    for attempt in range(ATTEMPTS):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await _record(conn, events, source, cmd, email)
        except (ConcurrencyError, asyncpg.UniqueViolationError):
            # Another request created the same customer or appended to the stream first.
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _record(
    conn: asyncpg.Connection,
    events: EventStore,
    source: str,
    cmd: domain.RecordInteraction,
    email: str | None,
) -> Accepted:
    traceparent = current_traceparent()
    new = []
    if cmd.customer_id is not None:
        customer_id = cmd.customer_id
        if not await store.customer_exists(conn, customer_id):
            raise domain.InvalidInput("customer.id", "unknown customer")
    else:
        assert email is not None
        found = await store.customer_by_identifier(conn, "email", email)
        if found is None:
            customer_id = domain.new_customer_id()
            await store.add_customer(conn, customer_id, [("email", email)])
            new.append(
                new_event(
                    domain.CUSTOMER_CREATED,
                    customer_id,
                    domain.customer_created(customer_id, email),
                    source,
                    traceparent,
                )
            )
        else:
            customer_id = found
    interaction = new_event(
        domain.INTERACTION_RECORDED,
        customer_id,
        domain.interaction_recorded(customer_id, cmd),
        source,
        traceparent,
    )
    new.append(interaction)
    await events.append(conn, [Append(stream_of(customer_id), None, new, INTAKE)])
    return Accepted(customer_id, interaction.id, [e.id for e in new])
