"""A consumer-group subscriber to the crm-backbone's topics: decode, unseal, print, commit.

    pip install "crm-client[subscriber]" aiokafka
    CRM_API_KEY=<a key with scope keys> python subscriber.py --group my-team

Reads from the earliest offset the group has not committed, prints one line per event (its type,
customer and data with personal fields opened) and commits each batch's offsets only after it is
processed, so that a crash reads it again rather than losing it (at least once: deduplicate on
`event.id` if printing twice matters). A message that is not one of our events is reported and
skipped; intake not answering the key lookup stops the subscriber before it commits.
"""

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer
from crm_client.events import DecodeError, Event, decode
from crm_client.unseal import Unsealer

TOPICS = ("crm.intake.v1", "crm.case.v1", "crm.notification.v1", "crm.analytics.v1")


def show(event: Event) -> str:
    data: Any = event.data if isinstance(event.data, dict) else event.data.model_dump(mode="json")
    return json.dumps(
        {"type": event.type, "customer": event.subject, "time": event.time.isoformat(), "data": data},
        ensure_ascii=False,
    )


async def run(args: argparse.Namespace) -> int:
    consumer = AIOKafkaConsumer(
        *args.topics,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",  # a new group starts at the beginning of each topic
        enable_auto_commit=False,  # committed below, after processing
    )
    printed = 0
    async with Unsealer(args.intake, args.api_key, key_cache_seconds=args.key_cache_seconds) as unsealer:
        await consumer.start()
        try:
            while args.limit is None or printed < args.limit:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        try:
                            event = decode(record.key, record.value, record.headers)
                        except DecodeError as exc:
                            print(f"skipped {record.topic}/{record.partition}@{record.offset}: {exc}", file=sys.stderr)
                            continue
                        print(show(await unsealer.unseal_async(event)), flush=True)
                        printed += 1
                if batches:
                    await consumer.commit()  # what was processed, and no more
        finally:
            await consumer.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("CRM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--intake", default=os.environ.get("CRM_INTAKE_URL", "http://127.0.0.1:8001"))
    parser.add_argument("--api-key", default=os.environ.get("CRM_API_KEY"), help="scope keys (default $CRM_API_KEY)")
    parser.add_argument("--group", default="crm-example-subscriber", help="the consumer group id")
    parser.add_argument("--topics", nargs="+", default=list(TOPICS))
    parser.add_argument("--key-cache-seconds", type=float, default=300.0)
    parser.add_argument("--limit", type=int, default=None, help="stop after printing this many events")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("an API key with scope keys is needed: --api-key or CRM_API_KEY")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
