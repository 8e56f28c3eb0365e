"""Producers without idempotence: the embedded broker has no idempotent producer and no transactions.

Tansu 0.6 fails InitProducerId, so a producer with enable_idempotence cannot start against it
(docs/broker.md; tests/plumbing/test_no_idempotence.py). Every producer of ours therefore runs
with PRODUCER_OPTIONS, and exactly-once effect comes from the consumer side: a retry's duplicate
is skipped by the consumers' applied-events record, written in the projections' transaction,
which works the same on Apache Kafka.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# Keyword arguments for every aiokafka producer: acknowledged by all in-sync replicas, no
# idempotence (the broker lacks InitProducerId).
PRODUCER_OPTIONS: Mapping[str, Any] = MappingProxyType({"acks": "all", "enable_idempotence": False})
