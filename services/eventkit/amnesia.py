"""Noticing a broker that forgot what it acknowledged.

The embedded broker keeps nothing on disk, and a real cluster can lose a topic too. The relay
records, per partition, the highest offset the broker acknowledged (relay_watermarks, in the
service's own database). If a topic is gone, a partition now ends at or before that offset, or
a topic has another partition count than configured (a broker that forgot a topic makes it anew
with its default count when any client asks for it), the broker forgot: the relay recreates the
topics, with the configured count, and publishes every stored event again. Consumers drop the
repeats by event id, so the only cost is the traffic.

The ends are read by watermarks.PartitionEnds: from fetch responses stamped after the check
began (an answer left from the previous check would hide a loss for a round, or, with the
partition grown since, report one that did not happen), and nothing is fetched between checks.
"""

import asyncio
import logging
from collections import Counter

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from eventkit.telemetry import BROKER_AMNESIA
from eventkit.topics import ensure_topics, remake_topics
from eventkit.watermarks import PartitionEnds

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
        self._ends = PartitionEnds(bootstrap_servers)
        self._published: set[str] = set()  # the topics of the last watermarks: what recover() may remake

    async def stop(self) -> None:
        await self._ends.stop()

    async def forgot(self, watermarks: dict[TopicPartition, int]) -> str | None:
        """Why the broker forgot acknowledged messages, or None if it did not (or cannot tell now)."""
        if not watermarks:
            return None
        self._published = {tp.topic for tp in watermarks}
        try:
            present = await asyncio.wait_for(self._ends.topics(), 10)
            missing = sorted(self._published - present)
            if missing:
                return f"topics missing: {', '.join(missing)}"
            counts = Counter(tp.topic for tp in await asyncio.wait_for(self._ends.partitions(self._published), 10))
            if misshapen := sorted(t for t in self._published if counts[t] != self._partitions):
                return ", ".join(f"{t} has {counts[t]} partitions, not {self._partitions}" for t in misshapen)
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

    async def recover(self) -> None:
        """Recreate the topics, and make anew those published to that have another partition
        count (made by the broker on its own); the caller republishes."""
        self._amnesia.inc()
        await ensure_topics(self._bootstrap, self._partitions, self._replication, names=self._topics)
        if self._published:
            counts = await remake_topics(self._bootstrap, sorted(self._published), self._partitions, self._replication)
            if wrong := {t: n for t, n in counts.items() if n != self._partitions}:
                log.error("topics still with another partition count than %d: %s", self._partitions, wrong)
