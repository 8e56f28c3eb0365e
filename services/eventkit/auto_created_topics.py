"""Topics made by whoever asks for their metadata, with the broker's default partition count.

aiokafka always sets allow_auto_topic_creation, and a subscribed consumer asks for its topics when
it (re)joins its group; the embedded broker (and Apache Kafka with auto.create.topics.enable)
then creates a missing topic with its default count. After the embedded broker restarts empty, a
consumer can do that before the services recreate the topics. Events still flow, on fewer
partitions. Such a topic is reported, not deleted and made again with the configured count: the
embedded broker's groups then keep their old assignment and the new partitions go unread, nor can
partitions be added there (no CreatePartitions). See docs/broker.md; tests/plumbing/test_topics.py.

And so counts are read from the metadata of all topics, never by naming one: that would create it.
"""

import logging
from collections.abc import Mapping, Sequence

from aiokafka.admin import AIOKafkaAdminClient

log = logging.getLogger(__name__)


async def partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """Partitions of each of these topics that exists, from the metadata of all topics: asking
    for a topic by name makes a broker that auto-creates topics create it."""
    wanted = set(names)
    return {
        t["topic"]: len(t["partitions"])
        for t in await admin.describe_topics()
        if t["error_code"] == 0 and t["topic"] in wanted
    }


async def warn_of_other_counts(admin: AIOKafkaAdminClient, partitions: Mapping[str, int]) -> None:
    """Log a warning for each of these topics (name -> partitions wanted) that has another count
    (made by a client's metadata request before it was created with the configured count)."""
    for name, count in (await partition_counts(admin, list(partitions))).items():
        if count != partitions[name]:
            log.warning("topic %s has %d partitions, not the %d configured", name, count, partitions[name])
