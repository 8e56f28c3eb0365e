"""The applied-events record that opens every consumer batch's transaction: new ids are recorded
in the BEGIN's own round trip; ids recorded before are told apart and not reported as new."""

import uuid
from typing import Any

import asyncpg
import pytest
from eventkit.applied import AppliedRecord


class CountingConnection(asyncpg.Connection):
    """Counts the queries sent: each call is one round trip to PostgreSQL."""

    sent: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = []

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        self.sent.append(query)
        return await super().execute(query, *args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(query)
        return await super().fetch(query, *args, **kwargs)


async def recorded(conn: asyncpg.Connection) -> set[str]:
    return {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM applied_events")}


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def test_new_ids_are_recorded_in_the_begins_round_trip(dsn: str) -> None:
    conn: CountingConnection = await asyncpg.connect(dsn, connection_class=CountingConnection)
    try:
        batch = ids(3)
        async with AppliedRecord().transaction(conn, batch) as fresh:
            opened = list(conn.sent)
            assert conn.is_in_transaction()
        assert fresh == set(batch)
        assert len(opened) == 1  # BEGIN and the INSERT together
        assert opened[0].startswith("BEGIN; INSERT INTO applied_events")
        assert conn.sent[1:] == ["COMMIT"]
        assert await recorded(conn) == set(batch)
    finally:
        await conn.close()


async def test_ids_recorded_before_are_not_new_again(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        first = ids(3)
        async with AppliedRecord().transaction(conn, first):
            pass
        second = ids(2)
        async with AppliedRecord().transaction(conn, [first[1], *second, first[0]]) as fresh:
            # Only the new ones, and the earlier rollback of the one-round-trip attempt left
            # this transaction writing: what is written here commits with the record.
            await conn.execute("CREATE TABLE written_with_record (x int)")
        assert fresh == set(second)
        assert await recorded(conn) == set(first) | set(second)
        assert await conn.fetchval("SELECT to_regclass('written_with_record') IS NOT NULL")
    finally:
        await conn.close()


async def test_a_failure_in_the_transaction_records_nothing(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        batch = ids(2)
        with pytest.raises(RuntimeError):
            async with AppliedRecord().transaction(conn, batch):
                raise RuntimeError("a subscriber failed")
        assert not conn.is_in_transaction()
        assert await recorded(conn) == set()
        async with AppliedRecord().transaction(conn, batch) as fresh:  # so a retry applies them
            pass
        assert fresh == set(batch)
    finally:
        await conn.close()


async def test_an_id_not_spelled_canonically_is_never_inlined_and_still_recorded(dsn: str) -> None:
    conn: CountingConnection = await asyncpg.connect(dsn, connection_class=CountingConnection)
    try:
        upper = str(uuid.uuid4()).upper()
        async with AppliedRecord().transaction(conn, [upper]) as fresh:
            pass
        assert not any(upper in q for q in conn.sent)  # sent as a parameter, not in the query text
        assert fresh == {upper.lower()}
        assert await recorded(conn) == {upper.lower()}
    finally:
        await conn.close()


async def test_no_ids_is_a_plain_transaction(dsn: str) -> None:
    conn: CountingConnection = await asyncpg.connect(dsn, connection_class=CountingConnection)
    try:
        async with AppliedRecord().transaction(conn, []) as fresh:
            assert conn.is_in_transaction()
        assert fresh == set()
        assert conn.sent == ["BEGIN", "COMMIT"]
    finally:
        await conn.close()
