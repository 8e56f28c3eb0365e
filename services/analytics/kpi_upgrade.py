"""Retiring the KPI stream's own consumer group (crm-analytics-kpi), once, at start.

Before 2026-12 the KPI fold read every topic in a group of its own, with its own dedup record
(kpi_applied_events); now it rides on the service's consumer (stream.py). The two groups stand
at different offsets when a deployment upgrades, so before the one consumer starts, every event
from where the slower of the two stands up to the partitions' ends now is looked at once:

- applied by the timeline consumer but not folded yet (the KPI group was behind): folded now,
  in partition order, with kpi_applied_events as its dedup record, as the KPI group would have;
- folded but not applied by the timeline consumer (the KPI group was ahead): the one consumer
  will read it again, so its id goes to kpi_pending_skip and stream.KpiGate skips its fold once.

"Applied" is an offset under the group's committed offset (committed only after the applying
transaction) or an id in the group's dedup record (applied, the commit not made yet). Every
analytics process of the old version must be stopped first: a KPI group still consuming would
fold events this has classified. kpi_group_retired records that it is done; a fresh database
(nothing applied by either) is retired at once. The old group's offsets stay on the broker,
unused.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from eventkit.consumer import BatchApplier
from eventkit.envelope import Envelope
from eventkit.partition_ends import PartitionEnds, committed_offsets
from servicekit.app import acceptance
from servicekit.runtime import Runtime

from analytics.settings import AnalyticsSettings
from analytics.stream import kpi_subscribers
from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

log = logging.getLogger(__name__)
Record: TypeAlias = ConsumerRecord[bytes, bytes]
RETIRE_LOCK = 0x4B5049  # pg_advisory_lock key: "KPI"


def legacy_group(settings: AnalyticsSettings) -> str:
    return f"crm-{settings.service_name}-kpi"


async def retire_kpi_group(rt: Runtime[AnalyticsSettings, None], topics: Sequence[str] = ALL_EVENT_TOPICS) -> None:
    """Run before the service's consumer starts (ServiceSpec.before_consumer). Instances starting
    together take turns (a session lock): the first retires the group, the others find it done."""
    async with rt.db.acquire() as lock:
        await lock.execute("SELECT pg_advisory_lock($1)", RETIRE_LOCK)
        try:
            await _retire(rt, topics)
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", RETIRE_LOCK)


async def _retire(rt: Runtime[AnalyticsSettings, None], topics: Sequence[str]) -> None:
    async with rt.db.acquire() as conn:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM kpi_group_retired)"):
            return
        fresh = not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM kpi_applied_events) OR EXISTS (SELECT 1 FROM applied_events)"
        )
    caught_up = skipped = 0
    if not fresh:
        caught_up, skipped = await _catch_up(rt, topics)
    async with rt.db.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO kpi_group_retired (caught_up, skipped) VALUES ($1, $2)", caught_up, skipped)
        await conn.execute("TRUNCATE kpi_applied_events")  # no reader any more
    if not fresh:
        log.info("KPI group %s retired: %d events folded, %d to skip", legacy_group(rt.settings), caught_up, skipped)


async def _catch_up(rt: Runtime[AnalyticsSettings, None], topics: Sequence[str]) -> tuple[int, int]:
    s = rt.settings
    options = s.kafka_client_options()
    ends_reader = PartitionEnds(s.kafka_bootstrap_servers, client_options=options)
    try:
        partitions = await ends_reader.partitions(topics)
        ends = await ends_reader.read(partitions, timeout_s=25)
    finally:
        await ends_reader.stop()
    if silent := [tp for tp in partitions if tp not in ends]:
        raise RuntimeError(f"no fetch answered for {silent}: the KPI group cannot be retired yet")
    bootstrap = s.kafka_bootstrap_servers
    kpi = await committed_offsets(bootstrap, legacy_group(s), partitions, client_options=options)
    main = await committed_offsets(bootstrap, s.kafka_consumer_group, partitions, client_options=options)
    starts = {tp: min(kpi.get(tp, 0), main.get(tp, 0)) for tp in partitions}
    todo = {tp: start for tp, start in starts.items() if start < ends[tp]}
    if not todo:
        return 0, 0
    applier = BatchApplier(
        service=f"{s.service_name}-kpi",
        pool=rt.db,
        producer=rt.producer,
        subscribers=kpi_subscribers(rt.events, s),
        acceptance=acceptance(s),
        deadletter_topic=DEADLETTER,
        applied_table="kpi_applied_events",
    )
    reader = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a start the log no longer has: from what it has
        max_poll_records=2_000,
        **options,
    )
    await reader.start()
    caught_up = skipped = 0
    try:
        reader.assign(list(todo))
        for tp, start in todo.items():
            reader.seek(tp, start)
        pending = set(todo)
        while pending:
            batches = await reader.getmany(*pending, timeout_ms=1_000)
            for tp, records in batches.items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    c, k = await _classify_and_apply(rt, applier, tp, records, kpi, main)
                    caught_up, skipped = caught_up + c, skipped + k
                if not records or records[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
    finally:
        await reader.stop()
    return caught_up, skipped


async def _classify_and_apply(
    rt: Runtime[AnalyticsSettings, None],
    applier: BatchApplier,
    tp: TopicPartition,
    records: Sequence[Record],
    kpi: Mapping[TopicPartition, int],
    main: Mapping[TopicPartition, int],
) -> tuple[int, int]:
    """Fold the records the timeline applied and the KPI group did not; note the converse."""
    rules = acceptance(rt.settings)
    ids: dict[int, str] = {}
    for r in records:
        env = rules.accept(r)
        if isinstance(env, Envelope):  # a dead letter was parked by both groups already
            ids[r.offset] = env.id
    async with rt.db.acquire() as conn:
        in_main = {
            str(x["event_id"])
            for x in await conn.fetch(
                "SELECT event_id FROM applied_events WHERE event_id = ANY($1::uuid[])", list(ids.values())
            )
        }
        in_kpi = {
            str(x["event_id"])
            for x in await conn.fetch(
                "SELECT event_id FROM kpi_applied_events WHERE event_id = ANY($1::uuid[])", list(ids.values())
            )
        }
    fold: list[Record] = []
    skip: list[str] = []
    for r in records:
        event_id = ids.get(r.offset)
        if event_id is None:
            continue
        by_main = r.offset < main.get(tp, 0) or event_id in in_main
        by_kpi = r.offset < kpi.get(tp, 0) or event_id in in_kpi
        if by_main and not by_kpi:
            fold.append(r)
        elif by_kpi and not by_main:
            skip.append(event_id)
    if fold:
        await applier.handle_until_done(fold)
    if skip:
        async with rt.db.acquire() as conn:
            await conn.execute(
                "INSERT INTO kpi_pending_skip (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING", skip
            )
    return len(fold), len(skip)
