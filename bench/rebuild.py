"""The rebuild scenario's log: the scenario's own events, copied on the topics up to N messages.

    python -m bench.rebuild --bootstrap HOST:PORT --events 1000000

docs/product.md §13 times a replay "into an empty projection from 1,000,000 events"; the load phases of
`make bench` leave far fewer on the topics. Going through intake to make the rest would take
longer than the whole bench, so the log is topped up directly with aiokafka (the way the raw
produce limit is measured): copies of the messages the services themselves produced in this
run (so every payload is one the contracts' models validated, with the same mix of types and
sizes), each with a new event id, keyed by the same customer. A replay applies each copy as a
new timeline row.
"""

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from contracts.topics import ALL_EVENT_TOPICS  # noqa: E402


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def partitions_of(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of these topics, from fresh metadata (a consumer with nothing subscribed has none)."""
    await consumer._client.force_metadata_update()
    return [TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def read_log(bootstrap: str, limit: int) -> tuple[list[Message], int]:
    """Up to `limit` messages from the event topics, and how many the topics hold in all (the
    sum of the high watermarks a fetch reports; the embedded broker's ListOffsets is unreliable)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, ALL_EVENT_TOPICS)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        messages: list[Message] = []
        pending = set(partitions)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=5000)
            for records in batches.values():
                messages += [Message(r.topic, r.key, r.value, tuple(r.headers)) for r in records]
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None and (await consumer.position(tp) >= high or len(messages) >= limit):
                    pending.discard(tp)
        total = sum(consumer.highwater(tp) or 0 for tp in partitions)
        return messages[:limit], total
    finally:
        await consumer.stop()


def with_new_id(message: Message) -> Message:
    """The same message as another event: a fresh ce_id, everything else as it was."""
    new_id = str(uuid.uuid4()).encode()
    headers = tuple((k, new_id if k == "ce_id" else v) for k, v in message.headers)
    return Message(message.topic, message.key, message.value, headers)


async def top_up(bootstrap: str, sample: list[Message], have: int, want: int) -> int:
    """Produce copies of `sample` until the event topics hold `want` messages; return how many were sent."""
    if have >= want or not sample:
        return 0
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20, enable_idempotence=False
    )
    await producer.start()
    try:
        sent = 0
        todo = want - have
        while sent < todo:
            chunk = [with_new_id(sample[(sent + i) % len(sample)]) for i in range(min(5000, todo - sent))]
            futures = [await producer.send(m.topic, m.value, key=m.key, headers=list(m.headers)) for m in chunk]
            await asyncio.gather(*futures)
            sent += len(chunk)
        return sent
    finally:
        await producer.stop()


async def seed(bootstrap: str, events: int, sample_size: int = 50_000) -> dict[str, float]:
    t0 = time.monotonic()
    sample, have = await read_log(bootstrap, sample_size)
    sent = await top_up(bootstrap, sample, have, events)
    return {"had": have, "sent": sent, "sample": len(sample), "seconds": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--events", type=int, default=1_000_000)
    a = p.parse_args(argv)
    print(asyncio.run(seed(a.bootstrap, a.events)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
