"""Where partitions end (high watermarks as fetch responses report them), and where a consumer
group stands in them (its committed offsets).

Not ListOffsets: the embedded broker's answers too low once batches hold several records (see
docs/broker.md; tests/plumbing/test_partition_ends.py); the high watermark of a fetch response is
right on both brokers. The reader joins no group and commits nothing; a read fetches from the last end it saw,
at most a kilobyte per partition, and between reads it fetches nothing.
"""

import asyncio
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)


class PartitionEnds:
    def __init__(self, bootstrap_servers: str, *, client_options: Mapping[str, Any]) -> None:
        """`client_options`: keyword arguments for the Kafka client (security_protocol, sasl_*...)."""
        self.bootstrap_servers = bootstrap_servers
        self.client_options = client_options
        self._reader: AIOKafkaConsumer | None = None
        self._ends: dict[TopicPartition, int] = {}

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        """Every partition of these topics, as the broker's metadata has them now."""
        reader = await self._start()
        await reader._client.force_metadata_update()  # aiokafka has no public call for a refresh
        return [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or ())]

    async def partition_counts(self) -> dict[str, int]:
        """Every topic the broker has now, with its partition count: from the metadata of all
        topics, so none is named (a broker that auto-creates topics would create a missing one)."""
        reader = await self._start()
        cluster = await reader._client.fetch_all_metadata()  # what reader.topics() asks, counts kept
        return {t: len(cluster.partitions_for_topic(t) or ()) for t in cluster.topics()}

    async def read(
        self,
        partitions: Collection[TopicPartition],
        timeout_s: float = 10.0,
        start: Mapping[TopicPartition, int] | None = None,
    ) -> dict[TopicPartition, int]:
        """The current end of each partition (those the broker did not answer for within timeout_s
        are left out). A fetch starts at `start`'s offset where given (an offset past the end is
        read from the end), else at the last end seen."""
        reader = await self._start()
        wanted = set(partitions)
        if wanted != reader.assignment():
            reader.assign(list(wanted))
        for tp in wanted:
            if start is not None and tp in start:
                reader.seek(tp, start[tp])
            elif tp in self._ends:
                reader.seek(tp, self._ends[tp])  # from the last end seen: nothing before it again
            else:
                await reader.seek_to_beginning(tp)
        reader.resume(*wanted)
        asked_ms = int(1000 * time.time())  # aiokafka stamps each fetch response so, per partition
        seen: dict[TopicPartition, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while len(seen) < len(wanted) and loop.time() < deadline:
                await reader.getmany(*(wanted - set(seen)), timeout_ms=100)
                for tp in wanted - set(seen):
                    high = reader.highwater(tp)
                    answered = reader.last_poll_timestamp(tp)
                    if high is not None and answered is not None and answered >= asked_ms:
                        seen[tp] = high
        finally:
            # Between reads nothing is fetched: the broker is asked once per read, not all along.
            reader.pause(*wanted)
        self._ends.update(seen)
        return seen

    async def _start(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                enable_auto_commit=False,
                auto_offset_reset="latest",  # an offset the broker no longer has: read from its end
                max_partition_fetch_bytes=1024,
                fetch_max_wait_ms=100,
                **self.client_options,
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        self._ends = {}
        if reader is None:
            return
        try:
            await asyncio.wait_for(reader.stop(), 5)
        except (asyncio.CancelledError, Exception) as exc:
            # aiokafka's close awaits the fetch tasks it cancels and lets their CancelledError
            # out (seen when the broker died mid-fetch): it must not end the caller as if the
            # caller had been cancelled. A real cancellation of ours still goes through.
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise
            log.info("partition end reader closed uncleanly: %s", type(exc).__name__)


async def committed_offsets(
    bootstrap_servers: str,
    group_id: str,
    partitions: Collection[TopicPartition],
    *,
    client_options: Mapping[str, Any],
) -> dict[TopicPartition, int]:
    """The group's committed offset of each partition it has committed. Asked without joining
    the group: the member assigns nothing and commits nothing."""
    member = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False, **client_options
    )
    await member.start()
    try:
        out = {}
        for tp in partitions:
            offset = await member.committed(tp)
            if offset is not None:
                out[tp] = offset
        return out
    finally:
        await member.stop()


async def drop_read_to_end(consumer: AIOKafkaConsumer, pending: set[TopicPartition]) -> None:
    """Remove from `pending` each partition the consumer has read to its end, as its fetches
    report the end (its high watermark; not ListOffsets, see above): for a read from the start
    of a log up to where it ends now."""
    for tp in list(pending):
        high = consumer.highwater(tp)
        if high is not None and await consumer.position(tp) >= high:
            pending.discard(tp)
