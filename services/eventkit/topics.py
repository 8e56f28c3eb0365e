"""Create the topics if they are missing (development and first deploys; idempotent)."""

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(bootstrap_servers: str, partitions: int, replication_factor: int) -> None:
    names = [*ALL_EVENT_TOPICS, DEADLETTER]
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                response = await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing]
                )
                for topic_error in getattr(response, "topic_errors", []):
                    name, code = topic_error[0], topic_error[1]
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        raise RuntimeError(f"creating topic {name} failed with error code {code}")
                log.info("created topics %s", ", ".join(missing))
            return
        except (OSError, TimeoutError, KafkaConnectionError) as exc:
            log.warning("broker not reachable for topic creation: %s", exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
