"""The embedded broker has no idempotent producer (eventkit/no_idempotence.py): a producer with
enable_idempotence cannot start against it, one with PRODUCER_OPTIONS can, and writes."""

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownError
from eventkit.no_idempotence import PRODUCER_OPTIONS

from tests.conftest import make_topic, read_from_start, unique_topic


async def test_an_idempotent_producer_cannot_start_against_the_embedded_broker(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        # Its InitProducerId request fails with an unknown error; Apache Kafka answers it.
        with pytest.raises(UnknownError):
            await producer.start()
    finally:
        await producer.stop()


async def test_a_producer_with_the_producer_options_starts_and_writes(bootstrap: str) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"stored", partition=0)
    finally:
        await producer.stop()
    assert [r.value for r in await read_from_start(bootstrap, topic, 10, lambda got: bool(got))] == [b"stored"]
