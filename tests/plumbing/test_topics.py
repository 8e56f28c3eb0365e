"""eventkit.topics on the real broker: missing topics are created, and a topic some client's
metadata request created first (with the broker's default partition count) is reported."""

import asyncio
import logging
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from eventkit.topics import ensure_topics
from eventkit.watermarks import PartitionEnds

from tests.conftest import unique_topic


async def counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """Partitions per topic, read from the metadata of all topics (asking for named ones would
    create them)."""
    reader = PartitionEnds(bootstrap)
    try:
        found = await reader.partitions(names)
    finally:
        await reader.stop()
    return dict(Counter(tp.topic for tp in found))


async def test_a_topic_a_subscriber_created_first_is_reported(bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    early, missing = unique_topic(), unique_topic()
    # A group member subscribed to a topic the broker does not know: its metadata requests ask
    # for the topic to be created (aiokafka always does), with the broker's default count. This
    # is what happens when the embedded broker restarts empty and a consumer rejoins first.
    consumer = AIOKafkaConsumer(early, bootstrap_servers=bootstrap, group_id=f"g-{early}")
    await consumer.start()
    try:
        for _ in range(50):
            if early in await counts(bootstrap, [early]):
                break
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
    assert missing not in await counts(bootstrap, [missing])  # reading the metadata created nothing
    default = (await counts(bootstrap, [early]))[early]
    wanted = default + 2

    with caplog.at_level(logging.WARNING, logger="eventkit.topics"):
        await ensure_topics(bootstrap, wanted, 1, names=[early, missing])

    assert await counts(bootstrap, [early, missing]) == {early: default, missing: wanted}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"topic {early} has {default} partitions, not the {wanted} configured"]
