"""The KPI stream: a faust-streaming agent over every topic, folding into PostgreSQL.

faust delivers at least once (and cannot use transactions on the embedded broker), so faust
tables are not the state: each batch goes through eventkit's BatchApplier, which records the
applied event ids in kpi_applied_events in the same transaction as the KPI changes. A restart,
a rebalance or a redelivery therefore neither loses nor counts anything twice.
"""

import asyncio
import contextlib
import logging
import tempfile
from typing import Any

import faust
from aiokafka.structs import TopicPartition
from eventkit.consumer import BatchApplier
from eventkit.partition_ends import PartitionEnds, committed_offsets
from eventkit.stale_commits import GroupGenerations, past_end
from eventkit.telemetry import CONSUMER_LAG
from faust.types import TP
from faust.types.auth import CredentialsT
from servicekit.app import Runtime, acceptance
from servicekit.settings import KafkaSecurity

from analytics.projections import KpiProjection
from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

log = logging.getLogger(__name__)
LAG_INTERVAL_S = 1.0


def broker_url(bootstrap_servers: str) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


def broker_credentials(s: KafkaSecurity) -> CredentialsT | None:
    """The same Kafka authentication as eventkit's clients (KAFKA_SECURITY_PROTOCOL...), for faust."""
    options = s.kafka_client_options()
    if s.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=s.kafka_sasl_password,
            ssl_context=options.get("ssl_context"),
            mechanism=s.kafka_sasl_mechanism,
        )
    if s.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


async def run_kpi_stream(rt: Runtime) -> None:
    s = rt.settings
    for noisy in ("faust", "mode", "aiokafka"):
        logging.getLogger(noisy).setLevel("WARNING")
    # faust wants a data directory for table files, by default "<app id>-data" in the working
    # directory (with `make run`, the checkout). The tables here are in memory and the state is
    # in PostgreSQL, so a temporary one, removed at shutdown, is all it needs.
    datadir = tempfile.TemporaryDirectory(prefix=f"crm-{s.service_name}-kpi-")
    app = faust.App(
        f"crm-{s.service_name}-kpi",  # the consumer group
        datadir=datadir.name,
        broker=broker_url(s.kafka_bootstrap_servers),
        broker_credentials=broker_credentials(s),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics are ours to create, with our partition count
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=max(1.0, s.kafka_session_timeout_ms / 5000),
    )
    topic = app.topic(*ALL_EVENT_TOPICS, key_type=bytes, value_type=bytes)
    applier = BatchApplier(
        service=f"{s.service_name}-kpi",
        pool=rt.db,
        producer=rt.producer,
        projections=[KpiProjection(rt.store, s.source)],
        applied_table="kpi_applied_events",
        acceptance=acceptance(s),  # what the service's own consumer applies, no more
        deadletter_topic=DEADLETTER,
    )

    applied_up_to: dict[TP, int] = {}  # next offset after the last applied message, for the lag gauge

    @app.agent(topic, name="fold-kpis")
    async def fold(stream: Any) -> None:  # a faust Stream; its take_events() is not in faust's stubs
        async for events in stream.take_events(s.consumer_max_batch, within=0.05):
            messages = [e.message for e in events]
            await applier.handle_until_done(messages)
            for m in messages:  # in offset order within a partition
                applied_up_to[m.tp] = m.offset + 1

    # Partitions to read from the start because the coordinator forgot the group (a broker
    # restarted empty): sought by report_lag, after faust has sought its committed offsets.
    forgotten: set[TP] = set()
    generations = GroupGenerations()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(_sender: Any, assigned: set[TP], **_: Any) -> None:
        generation = app.consumer_generation_id
        if generations.forgot(generation, bool(assigned)):
            log.warning("the KPI group is at generation %d again: the coordinator forgot the group; "
                        "rereading %d partitions from the start", generation, len(assigned))  # fmt: skip
            forgotten.update(assigned)

    await app.start()
    log.info("KPI stream started")
    ends = PartitionEnds(s.kafka_bootstrap_servers, client_options=s.kafka_client_options())
    lag = asyncio.create_task(
        report_lag(app, ends, applier.service, applied_up_to, group=app.conf.id, forgotten=forgotten)
    )
    try:
        await asyncio.Event().wait()  # until cancelled at shutdown
    finally:
        lag.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag
        await ends.stop()
        await app.stop()
        datadir.cleanup()


async def report_lag(
    app: faust.App,
    ends: PartitionEnds,
    service: str,
    applied_up_to: dict[TP, int],
    group: str,
    forgotten: set[TP] | None = None,
) -> None:
    """crm_consumer_lag per assigned partition, as eventkit's consumer reports it for the others.

    Lag is the partition's end minus the next offset to apply. A partition with nothing applied
    since the start counts from the group's committed offset (faust's fetch position runs ahead
    of what is applied once messages flow), or from the fetch position if it never committed.
    A partition that ends before faust's position is read again from the start, as eventkit's
    consumer does (the broker lost it and it is being refilled; see _reread_if_past_end), and so
    is every partition in `forgotten` (the coordinator forgot the group).
    The end is read by a reader of its own: faust's consumer stops fetching a partition while the
    stream's buffer of it is full, so the high watermark faust knows was behind during a
    catch-up, and the lag read 0 while thousands of events were still to fold.
    """
    reported: set[TP] = set()
    started_at: dict[TP, int | None] = {}  # the group's committed offset, None if it never committed
    while True:
        await asyncio.sleep(LAG_INTERVAL_S)
        try:
            consumer = app.consumer
            assigned = consumer.assignment()
            for tp in (reported | set(applied_up_to) | set(started_at)) - assigned:  # taken by a rebalance
                applied_up_to.pop(tp, None)
                started_at.pop(tp, None)
                if tp in reported:
                    CONSUMER_LAG.remove(service, tp.topic, str(tp.partition))
            reported &= assigned
            if not assigned:
                continue
            for tp in (forgotten or set()) & assigned:
                await consumer.seek(tp, 0)
                applied_up_to[tp] = 0
            if forgotten:
                forgotten.clear()
            kafka_tp = {tp: TopicPartition(tp.topic, tp.partition) for tp in assigned}  # aiokafka's own type
            high = await ends.read(list(kafka_tp.values()))
            if unasked := [tp for tp in assigned if tp not in applied_up_to and tp not in started_at]:
                found = await committed_offsets(
                    ends.bootstrap_servers, group, [kafka_tp[tp] for tp in unasked], client_options=ends.client_options
                )
                started_at |= {tp: found.get(kafka_tp[tp]) for tp in unasked}
            for tp in assigned:
                end = high.get(kafka_tp[tp])
                if end is not None and await _reread_if_past_end(consumer, tp, end, applied_up_to.get(tp)):
                    applied_up_to[tp] = 0
                    continue
                position = applied_up_to.get(tp, started_at.get(tp))
                if position is None:
                    position = await consumer.position(tp)
                if end is None or position is None:
                    continue
                CONSUMER_LAG.labels(service, tp.topic, str(tp.partition)).set(max(0, end - position))
                reported.add(tp)
        except Exception as exc:  # not started or rebalancing: the next round reports
            log.debug("consumer lag not available: %s", exc)


async def _reread_if_past_end(consumer: Any, tp: TP, end: int, applied: int | None) -> bool:
    """Seek to the start of a partition that ends before what was applied or where faust fetches
    next: after a broker restart that forgot everything, the group can rejoin from offsets a
    member committed of the log before (the embedded broker takes them), and would wait there
    while the relays fill the offsets before it with events not folded yet. Repeats are skipped
    by kpi_applied_events."""
    if (ahead := past_end(end, applied, await consumer.position(tp))) is None:
        return False
    log.warning("%s[%s] ends at %s, before our position %s: rereading it", tp.topic, tp.partition, end, ahead)
    await consumer.seek(tp, 0)  # faust's seek also forgets what it read, so the repeats come through
    return True
