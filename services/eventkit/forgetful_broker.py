"""Noticing a broker that forgot what it acknowledged.

The embedded broker keeps nothing on disk, and a real cluster can lose a topic too. The relay
records, per partition, the highest offset the broker acknowledged (relay_watermarks, in the
service's own database). If a topic is gone, a partition now ends at or before that offset, or
an offset was acknowledged in a partition the topic does not have, the broker forgot: the relay
recreates the topics and publishes every stored event again. Consumers drop the repeats by event
id, so the only cost is the traffic.

The last is the embedded broker's: one that forgot a topic makes it anew with its default
partition count when any client asks for it, and then acknowledges writes to the partitions past
that count (batches a producer queued for them while it was away) that no reader ever sees.

The embedded broker can also hide what it acknowledged while the ends move past it: it takes
writes to a topic it does not have (the relay's batches in the moment after it restarted, before
any client made the topic anew), and making the topic then starts its offsets at 0 again beside
those writes, so later batches get offsets inside them, and a reader, which goes by offsets,
skips their records. No check of the ends can tell. So after publishing the store again the
relay reads its topics back from the start (event_ids) and queues again whatever is not there.

The ends are read by partition_ends.PartitionEnds: from fetch responses stamped after the check
began (an answer left from the previous check would hide a loss for a round, or, with the
partition grown since, report one that did not happen), and nothing is fetched between checks.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from eventkit.partition_ends import PartitionEnds, drop_read_to_end
from eventkit.telemetry import BROKER_AMNESIA
from eventkit.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)


class BrokerWatch:
    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[TopicSpec],
        service: str,
        *,
        client_options: Mapping[str, Any],
    ) -> None:
        """`topics`: every topic to recreate when the broker forgot (the relay's and the others');
        `client_options`: keyword arguments for the Kafka clients."""
        self._bootstrap = bootstrap_servers
        self._client_options = client_options
        self._topics = topics
        self._amnesia = BROKER_AMNESIA.labels(service)
        self._ends = PartitionEnds(bootstrap_servers, client_options=client_options)

    async def stop(self) -> None:
        await self._ends.stop()

    async def forgot(self, watermarks: dict[TopicPartition, int]) -> str | None:
        """Why the broker forgot acknowledged messages, or None if it did not (or cannot tell now)."""
        if not watermarks:
            return None
        published = {tp.topic for tp in watermarks}
        try:
            counts = await asyncio.wait_for(self._ends.partition_counts(), 10)
            missing = sorted(published - counts.keys())
            if missing:
                return f"topics missing: {', '.join(missing)}"
            if beyond := sorted(tp for tp in watermarks if tp.partition >= counts[tp.topic]):
                tp = beyond[0]
                return f"{tp.topic}[{tp.partition}] was acknowledged, but {tp.topic} has {counts[tp.topic]} partitions"
            # From the acknowledged offset itself: a partition that still has it answers at once.
            ends = await self._ends.read(list(watermarks), timeout_s=5, start=watermarks)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.info("broker check skipped: %s", type(exc).__name__)
            await self.stop()  # a fresh reader next time, in case the broker came back anew
            return None
        for tp, acked in sorted(watermarks.items()):
            end = ends.get(tp)  # None: not answered within the time, so no verdict this round
            if end is not None and end <= acked:
                return f"{tp.topic}[{tp.partition}] ends at {end}, at or below acknowledged offset {acked}"
        return None

    async def event_ids(self, topics: Collection[str], chunk: int = 10_000) -> AsyncGenerator[list[uuid.UUID], None]:
        """The id of every event on these topics, as a subscriber starting now would read them: from
        the start of each partition to the end its fetches report, in chunks."""
        partitions = await self._ends.partitions(topics)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            **self._client_options,
        )
        await reader.start()
        try:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            pending = set(partitions)
            ids: list[uuid.UUID] = []
            while pending:
                for records in (await reader.getmany(*pending, timeout_ms=500)).values():
                    for r in records:
                        ce_id = next((v for k, v in r.headers if k == "ce_id"), b"")
                        try:
                            ids.append(uuid.UUID(ce_id.decode()))
                        except (AttributeError, UnicodeDecodeError, ValueError):
                            continue  # not an event of ours: nothing to compare with the store
                await drop_read_to_end(reader, pending)
                if len(ids) >= chunk:
                    yield ids
                    ids = []
            if ids:
                yield ids
        finally:
            await reader.stop()

    async def recover(self) -> None:
        """Recreate the topics; the caller republishes."""
        self._amnesia.inc()
        await ensure_topics(self._bootstrap, self._topics, client_options=self._client_options)
