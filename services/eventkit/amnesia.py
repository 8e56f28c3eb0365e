"""Noticing a broker that forgot what it acknowledged.

The embedded broker keeps nothing on disk, and a real cluster can lose a topic too. The relay
records, per partition, the highest offset the broker acknowledged (relay_watermarks, in the
service's own database). If a topic is gone, or a partition now ends before that offset, the
broker forgot: the relay recreates the topics and publishes every stored event again.
Consumers drop the repeats by event id, so the only cost is the traffic.

The end of a partition is read from a fetch's high watermark, not from ListOffsets: the
embedded broker's ListOffsets answers too low once batches hold several records (see README).
"""

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

from eventkit.telemetry import BROKER_AMNESIA
from eventkit.topics import ensure_topics

log = logging.getLogger(__name__)


class BrokerWatch:
    def __init__(
        self, bootstrap_servers: str, topics: list[str], partitions: int, replication_factor: int, service: str
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topics = topics
        self._partitions = partitions
        self._replication = replication_factor
        self._amnesia = BROKER_AMNESIA.labels(service)
        self._client: AIOKafkaConsumer | None = None

    async def _metadata_client(self) -> AIOKafkaConsumer:
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="none",  # an offset the broker no longer has is an error, not a reset
                max_partition_fetch_bytes=1024,
                fetch_max_wait_ms=100,
            )
            await client.start()
            self._client = client
        return self._client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.stop(), 5)
        except (asyncio.CancelledError, Exception) as exc:
            # aiokafka's close awaits the fetch tasks it cancels and lets their CancelledError
            # out (seen when the broker died mid-fetch): it must not end the relay as if the
            # relay itself had been cancelled. A real cancellation of ours still goes through.
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise
            log.info("broker check client closed uncleanly: %s", type(exc).__name__)

    async def forgot(self, watermarks: dict[TopicPartition, int]) -> str | None:
        """Why the broker forgot acknowledged messages, or None if it did not (or cannot tell now)."""
        if not watermarks:
            return None
        try:
            client = await self._metadata_client()
            present = await asyncio.wait_for(client.topics(), 10)
            missing = sorted({tp.topic for tp in watermarks} - present)
            if missing:
                return f"topics missing: {', '.join(missing)}"
            client.assign(list(watermarks))
            for tp, acked in watermarks.items():
                client.seek(tp, acked)
            await asyncio.wait_for(client.getmany(timeout_ms=500, max_records=len(watermarks)), 10)
        except OffsetOutOfRangeError as exc:
            return f"acknowledged offsets out of range: {exc}"
        except (KafkaError, TimeoutError, OSError) as exc:
            log.info("broker check skipped: %s", type(exc).__name__)
            await self.stop()  # a fresh client next time, in case the broker came back anew
            return None
        for tp, acked in watermarks.items():
            high = client.highwater(tp)
            if high is not None and high <= acked:
                return f"{tp.topic}[{tp.partition}] ends at {high}, at or below acknowledged offset {acked}"
        return None

    async def recover(self) -> None:
        """Recreate the topics; the caller republishes."""
        self._amnesia.inc()
        await ensure_topics(self._bootstrap, self._partitions, self._replication)
