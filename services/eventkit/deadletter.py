"""Dead letters: a message a consumer cannot decode or apply is parked, never retried forever.

It goes to crm.deadletter.v1 with its original key, value and headers plus dlq_* headers that
say why, is recorded in the service's dead_letters table, and is counted in a metric.
"""

from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from contracts.topics import DEADLETTER
from eventkit.telemetry import EVENTS_DEADLETTERED


@dataclass(frozen=True)
class DeadLetter:
    record: Any  # the message (aiokafka ConsumerRecord or faust Message)
    reason: str  # machine-readable, e.g. bad_json, unknown_type, apply_failed
    detail: str
    event_id: str | None = None
    event_type: str | None = None


async def record(conn: asyncpg.Connection, letters: list[DeadLetter]) -> None:
    await conn.executemany(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, event_id, event_type, reason, detail,"
        " message_key, message_value, message_headers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [
            (
                d.record.topic,
                d.record.partition,
                d.record.offset,
                d.event_id,
                d.event_type,
                d.reason,
                d.detail[:2000],
                d.record.key,
                d.record.value,
                [[k, v.decode(errors="replace")] for k, v in (d.record.headers or ())],
            )
            for d in letters
        ],
    )


async def publish(producer: AIOKafkaProducer, service: str, letters: list[DeadLetter]) -> None:
    """Send to the dead-letter topic and wait for the acks (before the offsets are committed)."""
    acks = []
    for d in letters:
        r = d.record
        headers = [
            *(r.headers or ()),
            ("dlq_reason", d.reason.encode()),
            ("dlq_detail", d.detail[:500].encode()),
            ("dlq_service", service.encode()),
            ("dlq_topic", r.topic.encode()),
            ("dlq_partition", str(r.partition).encode()),
            ("dlq_offset", str(r.offset).encode()),
        ]
        acks.append(await producer.send(DEADLETTER, value=r.value, key=r.key, headers=headers))
        EVENTS_DEADLETTERED.labels(service, r.topic, d.reason).inc()
    for ack in acks:
        await ack
