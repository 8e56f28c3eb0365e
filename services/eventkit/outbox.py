"""The outbox relay: publishes stored events to Kafka and forgets them only once acknowledged.

One relay per database is active at a time (a PostgreSQL advisory lock elects it), so events
leave in position order and each customer's events keep their order on their partition.
A crash after the broker acknowledged but before the rows were deleted publishes those events
again on restart; consumers drop the repeats by event id (at-least-once out, exactly-once in effect).
"""

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from eventkit.envelope import Envelope, kafka_headers
from eventkit.eventstore import OUTBOX_CHANNEL
from eventkit.faults import crash_point
from eventkit.telemetry import OUTBOX_BACKLOG, OUTBOX_PUBLISHED

log = logging.getLogger(__name__)
_LEADER_LOCK = 7_300_002

_PENDING = """
SELECT e.position, e.event_id, e.type, e.source, e.subject, e.time, e.traceparent, e.topic,
       e.data::text AS data_json
FROM outbox o JOIN events e USING (position)
ORDER BY o.position
LIMIT $1
"""


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        producer: AIOKafkaProducer,
        service: str,
        batch_size: int = 1000,
        poll_interval_s: float = 0.5,
    ) -> None:
        self._dsn = dsn
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._backlog = OUTBOX_BACKLOG.labels(service)
        self._published = OUTBOX_PUBLISHED.labels(service)
        self.is_leader = False

    async def run(self) -> None:
        """Forever: become leader, then publish whatever is pending; survive database restarts."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.is_leader = False
                log.warning("outbox relay restarting after %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                await asyncio.sleep(self._poll_interval_s)
            self.is_leader = True
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
            while True:
                self._wake.clear()
                published = await self.publish_pending(conn)
                if published < self._batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def publish_pending(self, conn: asyncpg.Connection) -> int:
        """Publish one batch in position order; delete it from the outbox after every ack."""
        rows = await conn.fetch(_PENDING, self._batch_size)
        if not rows:
            self._backlog.set(0)
            return 0
        crash_point("relay.before_send")
        acks = []
        for row in rows:
            # The stored JSON goes out as it is: no decode and re-encode on the way.
            envelope = Envelope(
                id=str(row["event_id"]),
                type=row["type"],
                source=row["source"],
                subject=row["subject"],
                time=row["time"],
                data={},
                traceparent=row["traceparent"],
            )
            acks.append(
                await self._producer.send(
                    row["topic"],
                    value=row["data_json"].encode(),
                    key=row["subject"].encode(),
                    headers=kafka_headers(envelope),
                )
            )
        await asyncio.gather(*acks)  # raises if any send failed: nothing is deleted, all is retried
        crash_point("relay.after_ack")
        positions = [r["position"] for r in rows]
        await conn.execute("DELETE FROM outbox WHERE position = ANY($1::bigint[])", positions)
        self._published.inc(len(rows))
        self._backlog.set(await conn.fetchval("SELECT count(*) FROM outbox"))
        return len(rows)
