"""Outbox relay against PostgreSQL and the broker: order per customer, delete only after ack,
and a crash between ack and delete publishes again (at-least-once out)."""

import asyncio
import uuid
from collections import defaultdict

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError
from aiokafka.structs import RecordMetadata
from eventkit import outbox
from eventkit.envelope import from_kafka, new_event
from eventkit.eventstore import Append, EventStore
from eventkit.forgetful_broker import BrokerWatch
from eventkit.live import FeedOnLoop, TimelineFeed
from eventkit.outbox import OutboxRelay
from eventkit.telemetry import OUTBOX_OLDEST_AGE, OUTBOX_PARKED, OUTBOX_PARKED_NOW, UNREAD_AFTER_REPUBLISH
from eventkit.thread_loop import LoopThread
from eventkit.topics import TopicSpec
from servicekit.runtime import OutboxHead
from servicekit.settings import kafka_options

from tests.conftest import make_topic, unique_topic

TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
store = EventStore("test")


async def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 20) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(got) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                got.extend(records)
        # a little longer, to see any extra (duplicate) message too
        for records in (await consumer.getmany(timeout_ms=500)).values():
            got.extend(records)
    finally:
        await consumer.stop()
    return got


async def store_events(pool: asyncpg.Pool, topic: str, customers: int, per_customer: int) -> list:
    """Interleave customers' events across many transactions, like concurrent requests would."""
    stored = []
    for n in range(per_customer):
        async with pool.acquire() as conn, conn.transaction():
            batch = []
            for c in range(customers):
                e = new_event("crm.test.happened.v1", f"cust-{c}", {"n": n}, "/crm/test", TP)
                batch.append(Append(f"stream-{c}", None, [e], topic))
                stored.append(e)
            await store.append(conn, batch)
    return stored


async def test_relay_publishes_in_order_per_customer_and_empties_outbox(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    stored = await store_events(pool, topic, customers=7, per_customer=30)
    relay = OutboxRelay("unused", producer, "test", batch_size=50)
    async with pool.acquire() as conn:
        while await relay.publish_pending(conn):
            pass
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0

    records = await read_all(bootstrap, topic, len(stored))
    assert len(records) == len(stored)
    by_customer: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in records:
        env = from_kafka(r.key, r.value, r.headers)
        by_customer[env.subject].append(env.data["n"])
        partitions[env.subject].add(r.partition)
    for customer, ns in by_customer.items():
        # records of one partition come back in offset order
        assert ns == list(range(30)), customer
        assert len(partitions[customer]) == 1  # keyed by customer: one partition each
    assert {str(e.id) for e in stored} == {from_kafka(r.key, r.value, r.headers).id for r in records}


async def test_crash_after_ack_before_delete_publishes_again(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    stored = await store_events(pool, topic, customers=3, per_customer=4)

    def crash(name: str) -> None:
        if name == "relay.after_ack":
            raise SystemExit("killed between broker ack and outbox delete")

    monkeypatch.setattr(outbox, "crash_point", crash)
    relay = OutboxRelay("unused", producer, "test")
    async with pool.acquire() as conn:
        with pytest.raises(SystemExit):
            await relay.publish_pending(conn)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == len(stored)  # nothing forgotten

    monkeypatch.setattr(outbox, "crash_point", lambda name: None)
    async with pool.acquire() as conn:
        assert await relay.publish_pending(conn) == len(stored)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0

    records = await read_all(bootstrap, topic, 2 * len(stored))
    ids = [from_kafka(r.key, r.value, r.headers).id for r in records]
    assert len(ids) == 2 * len(stored)  # every event twice: at-least-once on the wire
    assert set(ids) == {e.id for e in stored}


async def test_relay_wakes_on_commit_and_only_one_leads(
    pool: asyncpg.Pool, dsn: str, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    first = OutboxRelay(dsn, producer, "test", poll_interval_s=5)
    second = OutboxRelay(dsn, producer, "test", poll_interval_s=5)
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    try:
        await asyncio.sleep(0.5)
        assert [first.is_leader, second.is_leader].count(True) == 1
        stored = await store_events(pool, topic, customers=2, per_customer=2)
        records = await read_all(bootstrap, topic, len(stored), timeout_s=4)  # well under the 5 s poll
        assert len(records) == len(stored)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def on_topic(watch: BrokerWatch, topic: str) -> set[uuid.UUID]:
    """The event ids a subscriber reading the topic from the start gets."""
    return {i async for ids in watch.event_ids([topic]) for i in ids}


async def publish_everything(relay: OutboxRelay, conn: asyncpg.Connection) -> None:
    """What the relay's loop does with its outbox: publish until empty, a failed send tried again."""
    for _ in range(50):
        try:
            if not await relay.publish_pending(conn):
                return
        except KafkaError:
            pass  # the loop starts again after a failure; the rows are still in the outbox
    raise AssertionError("the outbox did not empty")


async def test_after_a_republish_the_relay_reads_its_topic_back_and_publishes_again_what_the_broker_hid(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    # The embedded broker's way of hiding acknowledged writes (test_topics.py): a batch written to
    # a topic it did not have, then the topic made, then writes at offsets inside that batch.
    topic = unique_topic()
    await make_topic(bootstrap, topic, partitions=1)
    watch = BrokerWatch(bootstrap, [TopicSpec(topic, 1, 1)], "t-read-back", client_options=kafka_options())
    relay = OutboxRelay("unused", producer, "t-read-back", batch_size=1000)
    # Republishes in small batches, so that one lands inside the batch written to no topic.
    small = OutboxRelay("unused", producer, "t-read-back", batch_size=3, broker_watch=watch)
    unread_before = UNREAD_AFTER_REPUBLISH.labels("t-read-back")._value.get()
    try:
        async with pool.acquire() as conn:
            stored = await store_events(pool, topic, customers=1, per_customer=10)
            await publish_everything(relay, conn)
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                await admin.delete_topics([topic])  # the broker restarted empty
                stored += await store_events(pool, topic, customers=1, per_customer=5)
                await publish_everything(relay, conn)  # out before anyone made the topic: acknowledged
                await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            finally:
                await admin.close()

            await small.check_broker(conn)  # the partition ends below the acknowledged offset: republish
            assert await conn.fetchval("SELECT count(*) FROM outbox") == len(stored)
            assert await conn.fetchval("SELECT upto FROM relay_read_back_due") == await conn.fetchval(
                "SELECT max(position) FROM events"
            )
            await publish_everything(small, conn)
            ids = {uuid.UUID(e.id) for e in stored}
            hidden = ids - await on_topic(watch, topic)
            assert hidden  # acknowledged in the republish, and no reader gets them

            # The relay that republished is killed before its read; the next leader takes it over.
            restarted = OutboxRelay("unused", producer, "t-read-back", batch_size=3, broker_watch=watch)
            await restarted.resume(conn)
            await restarted.read_back(conn)  # the whole republish is acknowledged: read the topic back
            assert await conn.fetchval("SELECT count(*) FROM outbox") == len(hidden)  # those again
            assert await conn.fetchval("SELECT rounds FROM relay_read_back_due") == 1
            await publish_everything(restarted, conn)
            await restarted.read_back(conn)  # now every event is there: nothing queued
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
            assert await conn.fetchval("SELECT count(*) FROM relay_read_back_due") == 0  # no longer due
            await restarted.read_back(conn)  # and no more reads after that
            assert ids <= await on_topic(watch, topic)
        assert UNREAD_AFTER_REPUBLISH.labels("t-read-back")._value.get() - unread_before == len(hidden)
    finally:
        await watch.stop()


async def test_a_relay_on_a_thread_of_its_own_publishes_and_feeds_this_loops_live_timeline(
    pool: asyncpg.Pool, dsn: str, bootstrap: str
) -> None:
    # As a service runs it (app.py): its own thread, loop and producer; the live timeline's
    # queues belong to the service's loop.
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    feed = TimelineFeed()
    watching = feed.subscribe(["cust-0"])
    on_this_loop = FeedOnLoop(feed, asyncio.get_running_loop())

    async def relay_main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
        await producer.start()
        try:
            await OutboxRelay(dsn, producer, "t-thread", poll_interval_s=0.05, feed=on_this_loop).run()
        finally:
            await producer.stop()

    relay = LoopThread("t-relay", relay_main)
    relay.start()
    try:
        stored = await store_events(pool, topic, customers=2, per_customer=5)
        fed = [(await asyncio.wait_for(watching.get(), 10))["event_id"] for _ in range(5)]
        assert fed == [e.id for e in stored if e.subject == "cust-0"]  # in order, only the watched customer
        records = await read_all(bootstrap, topic, len(stored))
        assert sorted(from_kafka(r.key, r.value, r.headers).id for r in records) == sorted(e.id for e in stored)
    finally:
        await relay.stop()
    assert not relay.is_alive()
    assert watching.empty()


# --- one event the broker refuses for good ---------------------------------------------------------

# A store as it was before events were limited: what a database written then may hold.
unlimited = EventStore("test", max_event_bytes=10 * 1024 * 1024)


async def store_with_a_poison_event(pool: asyncpg.Pool, bootstrap: str) -> tuple[str, list, object]:
    """A new topic, and customers' events for it around one of 1.2 MB (over the producer's 1 MiB),
    which comes first."""
    topic = unique_topic()
    await make_topic(bootstrap, topic)
    async with pool.acquire() as conn, conn.transaction():
        poison = new_event("crm.test.happened.v1", "cust-0", {"blob": "x" * 1_200_000}, "/crm/test", TP)
        await unlimited.append(conn, [Append("stream-0", None, [poison], topic)])
    stored = await store_events(pool, topic, customers=3, per_customer=5)
    return topic, stored, poison


async def test_an_event_the_broker_refuses_for_good_is_parked_and_the_others_go_out_in_order(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic, stored, poison = await store_with_a_poison_event(pool, bootstrap)
    parked_before = OUTBOX_PARKED.labels("t-park")._value.get()
    relay = OutboxRelay("unused", producer, "t-park", batch_size=4)
    async with pool.acquire() as conn:
        await publish_everything(relay, conn)  # once stalled for good on the first event
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        rows = await outbox.parked_events(conn, 10)
    assert [str(r["event_id"]) for r in rows] == [poison.id]  # type: ignore[attr-defined]
    assert rows[0]["reason"] == "MessageSizeTooLargeError"
    assert OUTBOX_PARKED.labels("t-park")._value.get() - parked_before == 1
    assert OUTBOX_PARKED_NOW.labels("t-park")._value.get() == 1

    records = await read_all(bootstrap, topic, len(stored))
    by_customer: dict[str, list[int]] = defaultdict(list)
    for r in records:
        env = from_kafka(r.key, r.value, r.headers)
        by_customer[env.subject].append(env.data["n"])
    assert by_customer == {f"cust-{c}": list(range(5)) for c in range(3)}  # each customer's order kept


async def test_a_relay_started_on_a_store_that_holds_a_poison_event_heals_and_unpark_publishes_it(
    pool: asyncpg.Pool, dsn: str, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    # A data directory written before events were limited: the relay of a restarted service goes on.
    topic, stored, poison = await store_with_a_poison_event(pool, bootstrap)
    relay = OutboxRelay(dsn, producer, "t-heal", poll_interval_s=0.05)
    task = asyncio.create_task(relay.run())
    try:
        records = await read_all(bootstrap, topic, len(stored))
        assert sorted(from_kafka(r.key, r.value, r.headers).id for r in records) == sorted(e.id for e in stored)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # Once the cause is mended (here: a producer that takes larger messages), `crm unpark` sends it.
    big = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, max_request_size=4 * 1024 * 1024
    )
    await big.start()
    try:
        async with pool.acquire() as conn:
            assert await outbox.unpark(conn, []) == 1
            assert await conn.fetchval("SELECT count(*) FROM outbox_parked") == 0
            await publish_everything(OutboxRelay("unused", big, "t-heal"), conn)
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await big.stop()
    records = await read_all(bootstrap, topic, len(stored) + 1)
    assert poison.id in {from_kafka(r.key, r.value, r.headers).id for r in records}  # type: ignore[attr-defined]


async def test_a_republish_of_the_whole_store_leaves_parked_events_parked(
    pool: asyncpg.Pool, bootstrap: str, producer: AIOKafkaProducer
) -> None:
    _, stored, _ = await store_with_a_poison_event(pool, bootstrap)
    relay = OutboxRelay("unused", producer, "t-park")
    async with pool.acquire() as conn:
        await publish_everything(relay, conn)
        queued, _ = await OutboxRelay.republish_all(conn)
        assert queued == len(stored)  # all but the parked one
        await publish_everything(relay, conn)
        assert await conn.fetchval("SELECT count(*) FROM outbox_parked") == 1


async def test_the_outbox_head_age_is_measured_while_the_relay_cannot_publish(pool: asyncpg.Pool) -> None:
    class BrokerAway:  # a producer whose every send fails as when the broker is unreachable
        async def send(self, *args: object, **kwargs: object) -> None:
            raise KafkaConnectionError("broker away")

    topic = unique_topic()
    await store_events(pool, topic, customers=1, per_customer=1)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE outbox SET queued_at = now() - interval '10 minutes'")
        relay = OutboxRelay("unused", BrokerAway(), "t-stuck")  # type: ignore[arg-type]
        with pytest.raises(KafkaConnectionError):
            await relay.publish_pending(conn)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1  # not parked: it may pass
        assert await conn.fetchval("SELECT count(*) FROM outbox_parked") == 0
    assert OUTBOX_OLDEST_AGE.labels("t-stuck")._value.get() >= 600


def test_readiness_calls_the_outbox_stuck_only_when_its_head_waited_and_stayed() -> None:
    head = OutboxHead(stuck_after_s=120)
    assert head.flowing(None, None, now=0)  # nothing waits
    assert head.flowing(7, 500.0, now=10)  # an old head, first seen now: it may be moving
    assert head.flowing(7, 600.0, now=100)  # the same head, seen for less than the threshold
    assert not head.flowing(7, 650.0, now=131)  # the same head for over 120 s: stuck
    assert head.flowing(8, 650.0, now=140)  # it moved: a backlog being worked off is flowing
    assert head.flowing(8, 30.0, now=400)  # a head that waited under the threshold is fine


async def test_a_batch_the_broker_refuses_for_one_event_parks_only_that_event(pool: asyncpg.Pool) -> None:
    """A broker refuses a whole produce batch over its message size limit: every future of the
    batch fails. Sent again one by one, only the event at fault is refused and parked."""

    class BatchRefusingBroker:  # the broker's answers; what the relay does with them is under test
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.pending: list[tuple[asyncio.Future[RecordMetadata], bytes]] = []

        async def send(self, topic: str, value: bytes, key: bytes, headers: list) -> asyncio.Future[RecordMetadata]:
            future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
            self.pending.append((future, value))
            asyncio.get_running_loop().call_soon(self.flush, topic)
            return future

        def flush(self, topic: str) -> None:  # one produce request per turn of the loop
            batch, self.pending = self.pending, []
            too_large = any(b"blob" in value for _, value in batch)
            for future, value in batch:
                if too_large:
                    future.set_exception(MessageSizeTooLargeError())
                else:
                    self.sent.append(value.decode())
                    future.set_result(RecordMetadata(topic, 0, None, len(self.sent), 0, None, 0))  # type: ignore[arg-type]

    topic = unique_topic()
    async with pool.acquire() as conn, conn.transaction():
        events = [new_event("crm.test.happened.v1", "cust-0", {"n": n}, "/crm/test", TP) for n in range(3)]
        events.insert(1, new_event("crm.test.happened.v1", "cust-0", {"blob": "x"}, "/crm/test", TP))
        await store.append(conn, [Append("stream-0", None, events, topic)])
    broker = BatchRefusingBroker()
    relay = OutboxRelay("unused", broker, "t-batch")  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        assert await relay.publish_pending(conn) == 4
        parked = [str(r["event_id"]) for r in await outbox.parked_events(conn, 10)]
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    assert parked == [events[1].id]
    assert [orjson.loads(v)["n"] for v in broker.sent] == [0, 1, 2]  # the others went out, in order
