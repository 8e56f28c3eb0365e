"""The applied-events record: the ids of the events a consumer group has applied, written first in
each batch's transaction, so that a redelivered event finds its id there and changes nothing.

A batch's transaction opens by recording its ids. In the usual case none was applied before, and
then the BEGIN and that INSERT travel to PostgreSQL as one simple query (the ids inlined as a
uuid[] literal; they are canonical UUIDs, checked here), one round trip instead of two in every
consumer batch. Only when the INSERT's row count says some id was there already (a redelivery)
is that undone and the batch's transaction opened again with the INSERT ... RETURNING that names
the new ones.
"""

import contextlib
from collections.abc import AsyncIterator, Sequence

import asyncpg

from eventkit.envelope import CANONICAL_UUID


class AppliedRecord:
    """The record in `table` (applied_events, or a consumer group's own)."""

    def __init__(self, table: str = "applied_events") -> None:
        self._begin_and_record = (
            f"BEGIN; INSERT INTO {table} (event_id) SELECT unnest('{{%s}}'::uuid[]) ON CONFLICT DO NOTHING"
        )
        self._record_returning = (
            f"INSERT INTO {table} (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id"
        )

    @contextlib.asynccontextmanager
    async def transaction(self, conn: asyncpg.Connection, ids: Sequence[str]) -> AsyncIterator[set[str]]:
        """BEGIN, record `ids` (distinct), yield those not recorded before; COMMIT, or ROLLBACK on
        an exception. What the caller writes in the block commits with the record or not at all."""
        try:
            yield await self._begin(conn, ids)
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                with contextlib.suppress(Exception):  # the connection broke: the server rolls back
                    await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")

    async def _begin(self, conn: asyncpg.Connection, ids: Sequence[str]) -> set[str]:
        if ids and all(CANONICAL_UUID.fullmatch(i) for i in ids):  # only these are inlined in the query
            status = await conn.execute(self._begin_and_record % ",".join(ids))  # "INSERT 0 <rows>"
            if int(status.rsplit(" ", 1)[-1]) == len(ids):
                return set(ids)
            await conn.execute("ROLLBACK")  # some were applied before: RETURNING says which
        await conn.execute("BEGIN")
        if not ids:
            return set()
        return {str(r["event_id"]) for r in await conn.fetch(self._record_returning, list(ids))}
