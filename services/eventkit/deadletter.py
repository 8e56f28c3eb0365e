"""Dead letters: a message a consumer cannot decode or apply is parked, never retried forever.

It goes to the dead-letter topic the caller names, with its original key, value and headers plus
dlq_* headers that say why, is recorded in the service's dead_letters table, and is counted in a
metric.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from eventkit.telemetry import EVENTS_DEADLETTERED


@dataclass(frozen=True)
class DeadLetter:
    record: Any  # the message (an aiokafka ConsumerRecord, or anything shaped like one)
    reason: str  # machine-readable, e.g. bad_json, unknown_type, apply_failed
    detail: str
    event_id: str | None = None
    event_type: str | None = None


def storable(text: str | None) -> str | None:
    """Text PostgreSQL can keep: it refuses NUL in text and jsonb, and unpaired surrogates are not
    UTF-8. Both are written out as escapes (\\x00, \\ud800), so a message carrying them is still
    parked, readable, instead of failing the insert and the whole batch with it."""
    if text is None or (text.isascii() and "\x00" not in text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    """aiokafka gives a sequence of pairs; a mapping is taken too."""
    return list(headers.items() if isinstance(headers, Mapping) else headers or ())


async def record(conn: asyncpg.Connection, letters: list[DeadLetter]) -> None:
    await conn.executemany(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, event_id, event_type, reason, detail,"
        " message_key, message_value, message_headers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [
            (
                storable(d.record.topic),
                d.record.partition,
                d.record.offset,
                storable(d.event_id),
                storable(d.event_type),
                storable(d.reason),
                storable(d.detail[:2000]),
                d.record.key,
                d.record.value,
                [[storable(k), storable(v.decode(errors="replace"))] for k, v in _headers(d.record.headers)],
            )
            for d in letters
        ],
    )


async def publish(producer: AIOKafkaProducer, topic: str, service: str, letters: list[DeadLetter]) -> None:
    """Send to the dead-letter topic and wait for the acks (before the offsets are committed)."""
    acks = []
    for d in letters:
        r = d.record
        headers = [
            *_headers(r.headers),
            ("dlq_reason", d.reason.encode(errors="backslashreplace")),
            ("dlq_detail", d.detail[:500].encode(errors="backslashreplace")),
            ("dlq_service", service.encode()),
            ("dlq_topic", r.topic.encode()),
            ("dlq_partition", str(r.partition).encode()),
            ("dlq_offset", str(r.offset).encode()),
        ]
        acks.append(await producer.send(topic, value=r.value, key=r.key, headers=headers))
        EVENTS_DEADLETTERED.labels(service, r.topic, d.reason).inc()
    for ack in acks:
        await ack
