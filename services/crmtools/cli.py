"""`crm`: one command line for operators.

    crm run                         the embedded stack and the four services (what `make run` does)
    crm status                      readiness, consumer lag, dead letters and outbox backlog per service,
                                    then each consumer group's lag per topic and partition
    crm replay <service>            rebuild the service's timeline projection from the log, with progress
                                    (intake: its customer field and tag tables too, from its own store)
    crm deadletters <service>       what the service's consumer parked, and why
    crm redrive <service> [ID ...]  put parked messages back on their topic (all not yet redriven if no ID)
    crm parked <service>            events the broker refused for good, kept out of the service's outbox
    crm unpark <service> [EVENT_ID ...]  queue parked events again, once the cause is mended (all if no ID)
    crm topics apply [--dry-run]    make the broker's topics what infra/topics.yaml says (prints the plan)
    crm migrate <service> | --all   apply a service's database migrations and exit

Database, broker and service addresses are those of `make run`, moved by the same settings
(CRM_PG_PORT, CRM_KAFKA_PORT, CRM_<SERVICE>_PORT); name them outright per service with
CRM_<SERVICE>_DATABASE_URL and CRM_<SERVICE>_URL, and the broker with KAFKA_BOOTSTRAP_SERVERS.
"""

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import queue
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from eventkit import db, outbox
from eventkit.acceptance import Acceptance
from eventkit.envelope import Envelope
from eventkit.no_idempotence import PRODUCER_OPTIONS
from eventkit.partition_ends import PartitionEnds, committed_offsets, drop_read_to_end
from servicekit.settings import DEFAULT_PORTS, Settings, kafka_options
from servicekit.timeline import apply_bulk, own_events, record_stored_aliases

from contracts.services import SERVICE_NAMES
from contracts.topics import ALL_EVENT_TOPICS, PROJECTED_WHEN_STORED
from crmtools import own_store
from crmtools.progress import ReplayProgress

SERVICES = SERVICE_NAMES


def _run_port(name: str) -> int | None:
    """The port `make run` was moved to with `name` (CRM_PG_PORT, CRM_CASE_PORT ...), read as
    devstack reads it; None when the setting is not there."""
    if not os.environ.get(name, "").strip():
        return None
    from crmtools.devstack import _port_setting  # here: the replay workers import this module too

    port = _port_setting(name, 0)
    if port == 0:  # `make run` took any free port, which only that run knows
        raise SystemExit(f"{name}=0 means any free port: name the address instead (crm --help)")
    return port


def _database_url(service: str) -> str:
    if url := os.environ.get(f"CRM_{service.upper()}_DATABASE_URL"):
        return url
    if port := _run_port("CRM_PG_PORT"):
        return f"postgresql://postgres@127.0.0.1:{port}/crm_{service}"
    return Settings.for_service(service).database_url


@contextlib.asynccontextmanager
async def _database(service: str) -> AsyncIterator[db.Connection]:
    conn = await db.connect(_database_url(service))
    try:
        yield conn
    finally:
        await conn.close()


def _service_url(service: str) -> str:
    if url := os.environ.get(f"CRM_{service.upper()}_URL"):
        return url
    return f"http://127.0.0.1:{_run_port(f'CRM_{service.upper()}_PORT') or DEFAULT_PORTS[service]}"


def _bootstrap() -> str:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return servers
    if port := _run_port("CRM_KAFKA_PORT"):
        return f"127.0.0.1:{port}"
    return Settings().kafka_bootstrap_servers


# --- status --------------------------------------------------------------------------------------


def _sum_metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((name + "{", name + " ")))


async def status() -> int:
    print(f"{'service':<13} {'ready':<6} {'lag':>8} {'dead letters':>13} {'outbox':>8} {'parked':>7}  url")
    worst = 0
    async with httpx.AsyncClient(timeout=3) as client:
        for name in SERVICES:
            url = _service_url(name)
            try:
                ready = (await client.get(f"{url}/readyz")).json().get("ready", False)
                metrics = (await client.get(f"{url}/metrics")).text
            except httpx.HTTPError:
                print(f"{name:<13} {'down':<6} {'-':>8} {'-':>13} {'-':>8} {'-':>7}  {url}")
                worst = 1
                continue
            lag = _sum_metric(metrics, "crm_consumer_lag")
            dead = _sum_metric(metrics, "crm_events_deadlettered_total")
            backlog = _sum_metric(metrics, "crm_outbox_backlog")
            held = _sum_metric(metrics, "crm_outbox_parked_events")
            print(f"{name:<13} {'yes' if ready else 'no':<6} {lag:>8.0f} {dead:>13.0f} {backlog:>8.0f} {held:>7.0f}"
                  f"  {url}")  # fmt: skip
            worst = worst or (0 if ready else 1)
    try:
        lags = await asyncio.wait_for(group_lags(_bootstrap(), CONSUMER_GROUPS), 30)
    except (KafkaError, TimeoutError, OSError) as exc:
        print(f"consumer lag by partition: broker not reachable ({type(exc).__name__})")
        return 1
    print(f"\n{'consumer group':<20} {'topic':<22} lag by partition (partition:messages behind)")
    for (group, topic), by_partition in lags.items():
        print(f"{group:<20} {topic:<22} " + " ".join(f"{p}:{n}" for p, n in sorted(by_partition.items())))
    return worst


# The consumer groups of `make run` (KAFKA_CONSUMER_GROUP overrides a service's own): one per
# service (analytics' KPI fold has no group of its own since 2026-12: docs/services/analytics.md).
CONSUMER_GROUPS = tuple(f"crm-{name}" for name in SERVICES)
# A group does not read its service's own topic where the service projects it as it stores it.
NOT_READ = {(f"crm-{name}", topic) for name, topic in PROJECTED_WHEN_STORED.items()}


async def group_lags(bootstrap: str, groups: Sequence[str]) -> dict[tuple[str, str], dict[int, int]]:
    """Per group and topic, how many messages each partition's end is ahead of the group's
    committed offset (a partition the group never committed counts from its start); not for a
    group and topic in NOT_READ.

    The end is a fetch's high watermark, not ListOffsets (unreliable on the embedded broker).
    Nothing joins a group or commits: the reader assigns partitions by hand.
    """
    partition_ends = PartitionEnds(bootstrap, client_options=kafka_options())
    try:
        partitions = await partition_ends.partitions(ALL_EVENT_TOPICS)
        ends = await partition_ends.read(partitions, timeout_s=25)
    finally:
        await partition_ends.stop()
    if silent := [f"{tp.topic}[{tp.partition}]" for tp in partitions if tp not in ends]:
        raise KafkaError(f"no fetch answered for {', '.join(silent)}")
    out: dict[tuple[str, str], dict[int, int]] = {}
    for group in groups:
        committed = await committed_offsets(bootstrap, group, partitions, client_options=kafka_options())
        for tp in partitions:
            if (group, tp.topic) not in NOT_READ:
                out.setdefault((group, tp.topic), {})[tp.partition] = max(0, ends[tp] - committed.get(tp, 0))
    return out


# --- replay --------------------------------------------------------------------------------------


async def replay(service: str, batch_size: int = 10_000, workers: int = 0) -> int:
    """Empty the timeline projection and apply every event on the topics again.

    The timeline projection is idempotent by itself (keyed by event id), so the service may keep
    running: its consumer and the replay can apply the same event, and it lands once.

    Skips what the consumers dead-letter (messages that do not decode or validate) and writes the
    rows and merges TimelineProjection.apply would (timeline.apply_bulk). Decoding and validating
    is most of the CPU, so `workers` processes (one per core by default, two at most) each replay
    a share of the partitions; in each, the next batch is fetched and decoded while PostgreSQL
    applies the current one.
    """
    workers = workers or min(2, os.cpu_count() or 1)
    # A service's own events are on its timeline from its event store (timeline.own_events): not
    # read from its topic, where only their merges would matter; those come from the store.
    topics = [t for t in ALL_EVENT_TOPICS if t != PROJECTED_WHEN_STORED.get(service)]
    reader = PartitionEnds(_bootstrap(), client_options=kafka_options())
    try:
        topic_partitions = await reader.partitions(topics)
        # The total before the first message is read (the progress starts at 0/<total>, not 0/0):
        # where each partition ends now; what arrives meanwhile the workers' counts add.
        ends = await reader.read(topic_partitions, timeout_s=25)
    finally:
        await reader.stop()
    partitions = [(tp.topic, tp.partition) for tp in topic_partitions]
    conn = await db.connect(_database_url(service))
    try:
        async with conn.transaction():
            await conn.execute("TRUNCATE timeline, customer_aliases")
            if own_events(service):
                await record_stored_aliases(conn)
        await own_store.rebuild(service, conn)
    finally:
        await conn.close()

    # Every other partition of each topic: the shares hold about as many messages each.
    shares = [partitions[i::workers] for i in range(workers) if partitions[i::workers]]
    spawn = multiprocessing.get_context("spawn")
    counters = spawn.Array("q", 2 * len(shares), lock=False)  # per worker: messages read, messages in its share
    results = spawn.Queue()
    procs = [
        spawn.Process(target=_replay_worker, args=(service, share, batch_size, counters, i, results), daemon=True)
        for i, share in enumerate(shares)
    ]
    outcomes: dict[int, tuple[int, int, str | None]] = {}
    with ReplayProgress(sum(ends.values())) as progress:
        for proc in procs:
            proc.start()
        try:
            while len(outcomes) < len(procs):
                await asyncio.sleep(0.2)
                with contextlib.suppress(queue.Empty):
                    while True:
                        slot, done, skipped, error = results.get_nowait()
                        outcomes[slot] = (done, skipped, error)
                for i, proc in enumerate(procs):
                    if i not in outcomes and proc.exitcode is not None and results.empty():
                        outcomes[i] = (0, 0, f"worker exited with {proc.exitcode}")
                if any(error for _, _, error in outcomes.values()):
                    break
                progress.update(
                    sum(counters[2 * i] for i in range(len(procs))),
                    total=sum(counters[2 * i + 1] for i in range(len(procs))),
                )
        finally:
            for proc in procs:
                if proc.is_alive():  # another worker failed: stop the rest
                    proc.terminate()
                proc.join()
        errors = [error for _, _, error in outcomes.values() if error]
        if not errors:
            progress.update(sum(done for done, _, _ in outcomes.values()))
    if errors:
        print(f"replay failed: {'; '.join(errors)}", file=sys.stderr)
        return 1
    skipped = sum(s for _, s, _ in outcomes.values())
    elapsed = progress.elapsed_s
    print(f"replayed {progress.done:,} messages into {service}'s timeline ({skipped} not applicable)"
          f" in {elapsed:.1f} s, {progress.done / max(elapsed, 1e-9):,.0f} events/s")  # fmt: skip
    return 0


def _replay_worker(
    service: str, share: list[tuple[str, int]], batch_size: int, counters: Any, slot: int, results: Any
) -> None:
    """One replay process: its share of the partitions; the answer (or the error) on `results`."""
    import uvloop

    try:
        done, skipped = uvloop.run(_replay_share(service, share, batch_size, counters, slot))
        results.put((slot, done, skipped, None))
    except BaseException as exc:
        results.put((slot, 0, 0, f"{type(exc).__name__}: {exc}"))
        raise


async def _replay_share(
    service: str, share: list[tuple[str, int]], batch_size: int, counters: Any, slot: int
) -> tuple[int, int]:
    from servicekit.app import acceptance  # the service's own rules (its wiring), in this worker only

    rules = acceptance(Settings.for_service(service))
    conn = await db.connect(_database_url(service))  # its own: apply_bulk keeps a temporary table
    consumer = AIOKafkaConsumer(
        bootstrap_servers=_bootstrap(),
        enable_auto_commit=False,
        max_poll_records=batch_size,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
        **kafka_options(),
    )
    await consumer.start()
    applying: asyncio.Task[None] | None = None
    try:
        partitions = [TopicPartition(topic, p) for topic, p in share]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        # Read until caught up with each partition's high watermark, as fetches report it (the
        # embedded broker's ListOffsets is not reliable; see docs/broker.md). Events arriving meanwhile are
        # applied by the service's own consumer as well; the projection takes each once.
        pending = set(partitions)
        done = skipped = 0
        with _fewer_collections():
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=batch_size)
                events, not_ours = _decode((r for records in batches.values() for r in records), rules)
                skipped += not_ours
                if applying is not None:
                    await applying  # batches land in the order they were read; raises its error
                    applying = None
                if events:
                    applying = asyncio.create_task(_apply_batch(conn, events))
                await drop_read_to_end(consumer, pending)
                done += sum(len(r) for r in batches.values())
                counters[2 * slot] = done
                counters[2 * slot + 1] = sum(consumer.highwater(tp) or 0 for tp in partitions)
            if applying is not None:
                await applying
                applying = None
        return done, skipped
    finally:
        if applying is not None:
            applying.cancel()
            await asyncio.gather(applying, return_exceptions=True)
        await consumer.stop()
        await conn.close()


def _decode(records: Iterable[ConsumerRecord[bytes, bytes]], rules: Acceptance) -> tuple[list[Envelope], int]:
    """The events the consumers would apply, and how many they would dead-letter instead."""
    events: list[Envelope] = []
    skipped = 0
    for r in records:
        env = rules.accept(r)
        if isinstance(env, Envelope):
            events.append(env)
        else:
            skipped += 1  # a dead letter: the consumer parked it; replay does too
    return events, skipped


async def _apply_batch(conn: db.Connection, events: list[Envelope]) -> None:
    for attempt in range(5):
        try:
            async with conn.transaction():
                await apply_bulk(conn, events)
            return
        except asyncpg.DeadlockDetectedError:
            # Another writer (the other worker, the service's consumer) inserted a row of this
            # batch in the same moment; PostgreSQL picked this transaction to roll back.
            if attempt == 4:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """A replay makes millions of short-lived objects that reference counting frees; at CPython's
    default thresholds the cycle collector would walk the heap again and again for nothing (a
    third of the decoding CPU, measured). Frozen start-up objects and rarer passes instead."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


# --- dead letters ----------------------------------------------------------------------------------


async def deadletters(service: str, limit: int) -> int:
    async with _database(service) as conn:
        rows = await conn.fetch(
            "SELECT id, recorded_at, topic, kafka_partition, kafka_offset, event_type, reason, detail, redriven_at"
            " FROM dead_letters ORDER BY id DESC LIMIT $1",
            limit,
        )
    for r in rows:
        state = f"redriven {r['redriven_at']:%Y-%m-%d %H:%M}" if r["redriven_at"] else "parked"
        where = f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}"
        print(f"{r['id']:>6} {r['recorded_at']:%Y-%m-%d %H:%M:%S} {where} {r['event_type'] or '-'}"
              f" {r['reason']}: {r['detail'][:120]} ({state})")  # fmt: skip
    print(f"{len(rows)} dead letters shown")
    return 0


async def redrive(service: str, ids: Sequence[int]) -> int:
    conn = await db.connect(_database_url(service))
    producer = AIOKafkaProducer(bootstrap_servers=_bootstrap(), **PRODUCER_OPTIONS, **kafka_options())
    await producer.start()
    try:
        query = (
            "SELECT id, topic, message_key, message_value, message_headers FROM dead_letters WHERE redriven_at IS NULL"
        )
        rows = await (conn.fetch(query + " AND id = ANY($1::bigint[]) ORDER BY id", list(ids)) if ids
                      else conn.fetch(query + " ORDER BY id"))  # fmt: skip
        for r in rows:
            headers: list[list[str]] = r["message_headers"]
            await producer.send_and_wait(
                r["topic"], r["message_value"], key=r["message_key"], headers=[(k, v.encode()) for k, v in headers]
            )
            await conn.execute("UPDATE dead_letters SET redriven_at = now() WHERE id = $1", r["id"])
        print(f"redrove {len(rows)} messages")
        return 0
    finally:
        await producer.stop()
        await conn.close()


# --- parked events ---------------------------------------------------------------------------------


async def parked(service: str, limit: int) -> int:
    async with _database(service) as conn:
        rows = await outbox.parked_events(conn, limit)
    for r in rows:
        print(f"{r['event_id']} {r['parked_at']:%Y-%m-%d %H:%M:%S} {r['topic']} {r['type']}"
              f" {r['data_bytes']} bytes {r['reason']}: {r['detail'][:120]}")  # fmt: skip
    print(f"{len(rows)} parked events shown")
    return 0


async def unpark(service: str, event_ids: Sequence[str]) -> int:
    async with _database(service) as conn:
        queued = await outbox.unpark(conn, event_ids)
    print(f"queued {queued} parked events again; those still refused are parked again")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="the embedded stack and the four services")
    sub.add_parser("status", help="readiness, lag, dead letters and outbox backlog per service")
    p = sub.add_parser("replay", help="rebuild a service's timeline projection from the log")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=0, help="replay processes (default: one per core, two at most)")
    p = sub.add_parser("deadletters", help="list a service's dead letters")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("redrive", help="put dead letters back on their topic")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("ids", nargs="*", type=int)
    p = sub.add_parser("parked", help="list the events a service's relay parked")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("unpark", help="queue parked events again")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("event_ids", nargs="*", type=uuid.UUID)
    p = sub.add_parser("topics", help="reconcile the broker's topics with the topics file")
    p.add_argument("action", choices=["apply"])
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p = sub.add_parser("migrate", help="apply a service's database migrations and exit")
    p.add_argument("service", nargs="?", choices=SERVICES)
    p.add_argument("--all", action="store_true", help="every service, each in its own database")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the database (default 60)")
    args = parser.parse_args(argv)
    if args.command == "topics":
        from crmtools.topics import apply

        return asyncio.run(apply(Settings(), args.dry_run))
    if args.command == "migrate":
        from crmtools.migrate import migrate

        if args.all == bool(args.service):
            parser.error("migrate: name one service or --all")
        return asyncio.run(migrate(SERVICES if args.all else [args.service], args.wait))
    if args.command == "run":
        from crmtools.devstack import main as devstack_main

        return devstack_main(["run"])
    if args.command == "status":
        return asyncio.run(status())
    if args.command == "replay":
        import uvloop  # the replay is CPU-bound in this process; uvloop's loop and transports cost less

        return uvloop.run(replay(args.service, args.batch_size, args.workers))
    if args.command == "deadletters":
        return asyncio.run(deadletters(args.service, args.limit))
    if args.command == "parked":
        return asyncio.run(parked(args.service, args.limit))
    if args.command == "unpark":
        return asyncio.run(unpark(args.service, [str(i) for i in args.event_ids]))
    return asyncio.run(redrive(args.service, args.ids))


if __name__ == "__main__":
    sys.exit(main())
