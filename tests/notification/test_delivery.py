"""notification against a real PostgreSQL, a real SMTP server (aiosmtpd) and a real HTTP receiver:
events go through the real idempotent batch applier and projections, deliveries through the real
delivery loop and adapters, under a controllable clock."""

import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import standardwebhooks
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from crmtools.infra import EmbeddedPostgres
from eventkit import crypto, db
from eventkit.acceptance import Acceptance
from eventkit.consumer import BatchApplier, Waiters
from eventkit.envelope import Envelope, new_event, to_kafka
from eventkit.eventstore import EventStore
from notification import delivery, domain, erasure, handlers, store, worker
from notification.context import NotificationContext
from notification.policies import ErasurePolicy, RulesPolicy
from notification.projections import ProfileProjection
from servicekit.keyring import ErasedKeyEviction, KeyRing, KeySource, KeysUnavailable, MemoryKeySource
from servicekit.timeline import TimelineProjection

from contracts import notification as n
from contracts.case import CASE_PERSONAL_FIELDS
from contracts.events import PERSONAL_FIELDS
from contracts.topics import DEADLETTER
from tests.clock import Clock
from tests.conftest import SCHEMAS, fresh_database
from tests.notification.receivers import SmtpServer, WebhookServer, standard_secret, webhook_server

MIGRATIONS = [Path(domain.__file__).parent / "migrations"]
TP = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
SECRET = "test-secret"
START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 23:30 in Tokyo
# The data keys: intake's vault, as far as these tests need one (events are sealed with them
# as intake and case seal theirs).
KEYS = MemoryKeySource()


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(await fresh_database(postgres, MIGRATIONS), 10)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    with webhook_server(SECRET) as server:
        yield server


class Harness:
    """The service's projections and delivery loop with test settings, fed events by hand."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        smtp: SmtpServer,
        hooks: WebhookServer,
        digest: domain.DigestPolicy | None = None,
        keys: KeySource = KEYS,
        secret: str = SECRET,
        wall_clock: Callable[[], float] = time.time,
        staff_cap: domain.Cap | None = None,
    ) -> None:
        """`secret` and `wall_clock` are the webhook signer's (the receiver checks the signature
        with SECRET and the timestamp against its own clock)."""
        self.pool = pool
        self.clock = Clock(START)
        self.keyring = KeyRing(keys)
        tag = uuid.uuid4().hex[:8]
        self.team_path, self.sms_path = f"/team-{tag}", f"/sms-{tag}"
        self.ctx = NotificationContext(
            source="/crm/notification",
            events=EventStore("notification-test"),
            book=domain.load_rulebook(),
            keyring=self.keyring,
            directory=domain.StaffDirectory(default_webhook_url=hooks.url + self.team_path),
            retry=domain.RetryPolicy(max_attempts=3, base=timedelta(seconds=1), max_delay=timedelta(seconds=10)),
            profile_wait=timedelta(seconds=5),
            send_lease=timedelta(seconds=30),
            clock=self.clock,
            digest=digest or domain.DigestPolicy(timedelta(hours=1)),
            staff_cap=staff_cap or domain.Cap(60, timedelta(hours=1)),
        )
        poster = delivery.WebhookPoster(secret, 5, wall_clock)
        self.sender = delivery.Senders(
            {
                "email": delivery.SmtpSender(delivery.SmtpConfig("127.0.0.1", smtp.port, sender="crm@test")),
                "webhook": delivery.WebhookSender(poster),
                "sms": delivery.SmsSender(poster, hooks.url + self.sms_path),
            }
        )
        self.applier = BatchApplier(
            service="notification-test",
            pool=pool,
            producer=producer,
            subscribers=[
                TimelineProjection(),
                ErasedKeyEviction(self.keyring),
                ProfileProjection(self.keyring),
                RulesPolicy(self.ctx),
                ErasurePolicy(self.ctx),
            ],
            acceptance=Acceptance(SCHEMAS),
            deadletter_topic=DEADLETTER,
            waiters=Waiters(),
        )
        self.offset = 0

    async def deliver(self, *events: Envelope) -> None:
        records = []
        for e in events:
            key, value, headers = to_kafka(e)
            self.offset += 1
            records.append(ConsumerRecord("t", 0, self.offset, 0, 0, key, value, None, len(key), len(value), headers))
        await self.applier.handle(records)

    async def run_loop(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            await worker.deliver_due(self.pool, self.ctx, self.sender)

    async def rows(self, customer: str) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM notifications WHERE customer_id = $1 ORDER BY rule", customer)

    async def dead_letter(self, notification_id: str) -> tuple[str, int] | None:
        """The reason and attempts of the notification's dead letter, if it has one."""
        letter = await self.pool.fetchrow(
            "SELECT reason, attempts FROM notification_dead_letters WHERE notification_id = $1", notification_id
        )
        return (letter["reason"], letter["attempts"]) if letter else None

    async def events(self, notification_id: str) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.pool.fetch(
            "SELECT type, data FROM events WHERE stream_id = $1 ORDER BY version", f"notification-{notification_id}"
        )
        return [(r["type"], r["data"]) for r in rows]


@pytest.fixture
def harness(pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer, hooks: WebhookServer) -> Harness:
    return Harness(pool, producer, smtp, hooks)


# --- event builders ---------------------------------------------------------------------------------


def key_of(customer: str) -> bytes:
    return KEYS.stored.setdefault(customer, crypto.new_data_key())


def intake(type_: str, customer: str, **data: Any) -> Envelope:
    """An intake event, its personal fields sealed under the customer's data key as intake does."""
    body = {"customer_id": customer, **data}
    if PERSONAL_FIELDS.get(type_):
        body = crypto.seal(body, PERSONAL_FIELDS[type_], customer, key_of(customer))
    return new_event(type_, customer, body, "/crm/intake", TP)


def created(customer: str, email: str | None = None, phone: str | None = None) -> Envelope:
    idents = [{"kind": "email", "value": email}] if email else []
    idents += [{"kind": "phone", "value": phone}] if phone else []
    return intake("crm.customer.created.v1", customer, identifiers=idents)


def preferences(customer: str, **prefs: Any) -> Envelope:
    return intake("crm.customer.preferences_changed.v1", customer, preferences=prefs, changed=list(prefs))


def consent(customer: str, purpose: str, granted: bool, channel: str | None = None) -> Envelope:
    return intake("crm.consent.changed.v1", customer, purpose=purpose, channel=channel, granted=granted)


def case_event(type_: str, customer: str, case_id: str, **data: Any) -> Envelope:
    """A case event, what agents wrote sealed under the customer's data key as case does."""
    body = {"case_id": case_id, "customer_id": customer, **data}
    fields = tuple(f for f in CASE_PERSONAL_FIELDS.get(type_, ()) if isinstance(body.get(f), str))
    if fields:
        body = crypto.seal(body, fields, customer, key_of(customer))
    return new_event(type_, customer, body, "/crm/case", TP)


def resolved(customer: str, case_id: str, reason: str = "Replaced the router.") -> Envelope:
    return case_event(
        "crm.case.status_changed.v1", customer, case_id, from_status="open", to_status="resolved",
        reason=reason, type="repair", priority="normal",
    )  # fmt: skip


def survey(customer: str, case_id: str, due_at: datetime) -> Envelope:
    return case_event(
        "crm.case.followup_requested.v1", customer, case_id, kind="csat_survey", due_at=due_at.isoformat()
    )


def breached(customer: str, case_id: str, owner: str | None = None) -> Envelope:
    return case_event(
        "crm.case.sla_breached.v1", customer, case_id, target="resolution", due_at=START.isoformat(),
        owner=owner, team="support", priority="high", type="repair",
    )  # fmt: skip


def warned(customer: str, case_id: str) -> Envelope:
    return case_event(
        "crm.case.sla_warning.v1", customer, case_id, target="resolution", due_at=START.isoformat(),
        owner=None, team="support", priority="high", type="repair",
    )  # fmt: skip


def ids() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"cust-{tag}", f"case-{tag}", f"{tag}@example.com"


# --- tests ------------------------------------------------------------------------------------------


async def test_case_resolved_email_reaches_smtp_in_the_customers_language(harness: Harness, smtp: SmtpServer) -> None:
    customer, case_id, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(created(customer, email), preferences(customer, language="de-AT"))
    event = resolved(customer, case_id)
    await harness.deliver(event)
    await harness.deliver(event)  # redelivered: nothing twice
    await harness.run_loop()
    [row] = await harness.rows(customer)
    assert (row["rule"], row["status"], row["channel"], row["language"]) == ("case_resolved", "sent", "email", "de")
    [mail] = smtp.with_header("X-CRM-Notification-Id", str(row["notification_id"]))
    assert mail["To"] == email and mail["Content-Language"] == "de"
    assert mail["Subject"] == f"Ihr Fall {case_id} ist gelöst"
    assert "Replaced the router." in mail.get_content()
    assert mail["Message-ID"] == f"<{row['notification_id']}@notification.crm>"
    events = await harness.events(str(row["notification_id"]))
    assert [t for t, _ in events] == [n.NOTIFICATION_SCHEDULED, n.NOTIFICATION_SENT]
    assert events[0][1]["source_event_id"] == event.id and events[0][1]["delayed_reason"] is None
    # The decisions are on the customer's timeline (the service's own events arrive via Kafka).
    stored = await harness.pool.fetch("SELECT subject, topic FROM events WHERE stream_id LIKE 'notification-%'")
    assert {(r["subject"], r["topic"]) for r in stored} >= {(customer, "crm.notification.v1")}


async def test_sla_breach_goes_to_the_team_webhook_signed_and_owner_duplicate_suppressed(
    harness: Harness, hooks: WebhookServer
) -> None:
    customer, case_id, _ = ids()
    harness.clock.now = datetime.now(UTC)  # the receiver checks the timestamp against its own clock
    await harness.deliver(breached(customer, case_id, owner="agent-unknown"))
    await harness.run_loop()
    [request] = hooks.received(harness.team_path)
    assert (request.verified, request.answered) == (True, 200)  # the receiver checked it itself
    ts = request.headers["X-CRM-Timestamp"]
    expected = "v1=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-CRM-Signature"] == expected  # deprecated, still sent
    assert abs(time.time() - int(ts)) < 60
    # Standard Webhooks: the library's verifier takes it; the id is the notification's.
    body = orjson.loads(request.body)
    receiver = standardwebhooks.Webhook(standard_secret(SECRET))
    assert delivery.standard_secret(SECRET) == standard_secret(SECRET)  # the helper says what the docs say
    assert receiver.verify(request.body, request.headers) == body
    assert request.headers["webhook-id"] == body["notification_id"] and request.headers["webhook-timestamp"] == ts
    assert delivery.verify_signature(SECRET, request.headers, request.body, time.time())
    assert not delivery.verify_signature(SECRET, request.headers, request.body + b" ", time.time())
    assert not delivery.verify_signature(SECRET, request.headers, request.body, time.time() + 3600)  # replayed
    assert body["rule"] == "sla_breached" and request.headers["Idempotency-Key"] == body["notification_id"]
    rows = await harness.rows(customer)
    by_recipient = {r["recipient"]: (r["status"], r["reason"]) for r in rows}
    # The owner has no contact of their own and falls back to the team webhook: one message, not two.
    assert by_recipient == {
        "staff:owner:agent-unknown": ("delivered", None),
        "staff:team:support": ("suppressed", "duplicate"),
    }
    delivered = next(r for r in rows if r["status"] == "delivered")
    types = [t for t, _ in await harness.events(str(delivered["notification_id"]))]
    assert types == [n.NOTIFICATION_SCHEDULED, n.NOTIFICATION_SENT, n.NOTIFICATION_DELIVERED]


async def test_a_receiver_failing_twice_gets_exactly_one_successful_delivery(
    harness: Harness, hooks: WebhookServer
) -> None:
    customer, case_id, _ = ids()
    harness.clock.now = datetime.now(UTC)
    hooks.answer(harness.team_path, [503, 500, 200])
    await harness.deliver(breached(customer, case_id))
    t0 = harness.clock.now
    for _ in range(6):  # each round: what is due now; then time moves past the longest backoff
        await harness.run_loop(1)
        harness.clock.advance(seconds=3)
    requests = hooks.received(harness.team_path)
    assert [r.answered for r in requests] == [503, 500, 200]
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1  # the same message each time
    # ... under one webhook-id (what a Standard Webhooks receiver deduplicates on), signed afresh
    assert {r.headers["webhook-id"] for r in requests} == {r.headers["Idempotency-Key"] for r in requests}
    assert all(r.verified for r in requests)
    [row] = await harness.rows(customer)
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    events = await harness.events(str(row["notification_id"]))
    failed = [d for t, d in events if t == n.NOTIFICATION_FAILED]
    assert [(d["attempt"], d["reason"], d["final"]) for d in failed] == [(1, "http_503", False), (2, "http_500", False)]
    # Backoff after the tries at t0 and t0 + 3 s: 1 s then 2 s, each within +-20 % jitter.
    first, second = (datetime.fromisoformat(d["next_attempt_at"]) for d in failed)
    assert 0.8 <= (first - t0).total_seconds() <= 1.2
    assert 1.6 <= (second - t0).total_seconds() - 3 <= 2.4
    assert [t for t, _ in events][-2:] == [n.NOTIFICATION_SENT, n.NOTIFICATION_DELIVERED]


async def test_a_receiver_that_always_fails_ends_in_a_dead_letter_with_the_reason(
    harness: Harness, hooks: WebhookServer
) -> None:
    customer, case_id, _ = ids()
    harness.clock.now = datetime.now(UTC)
    hooks.answer(harness.team_path, [500])
    await harness.deliver(breached(customer, case_id))
    for _ in range(8):
        await harness.run_loop(1)
        harness.clock.advance(seconds=5)
    assert [r.answered for r in hooks.received(harness.team_path)] == [500, 500, 500]  # max_attempts 3
    [row] = await harness.rows(customer)
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "http_500", 3)
    assert await harness.dead_letter(row["notification_id"]) == ("http_500", 3)
    events = await harness.events(str(row["notification_id"]))
    last_type, last = events[-1]
    assert last_type == n.NOTIFICATION_FAILED and last["final"] and last["next_attempt_at"] is None


async def test_a_permanent_refusal_is_not_retried(harness: Harness, hooks: WebhookServer) -> None:
    customer, case_id, _ = ids()
    harness.clock.now = datetime.now(UTC)
    hooks.answer(harness.team_path, [410])
    await harness.deliver(breached(customer, case_id))
    await harness.run_loop(2)
    assert len(hooks.received(harness.team_path)) == 1
    [row] = await harness.rows(customer)
    assert (row["status"], row["reason"]) == ("failed", "http_410")


async def test_a_whsec_secret_signs_what_a_standard_webhooks_verifier_accepts(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer
) -> None:
    """WEBHOOK_SECRET in the Standard Webhooks form: the key is its base64 part, and a receiver's
    library verifies the delivery with the same secret; a changed body or an old timestamp fails."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode().rstrip("=")  # unpadded, as often shown
    with webhook_server(secret) as receiver:
        harness = Harness(pool, producer, smtp, receiver, secret=secret)
        customer, case_id, _ = ids()
        harness.clock.now = datetime.now(UTC)
        await harness.deliver(breached(customer, case_id))
        await harness.run_loop()
        [request] = receiver.received(harness.team_path)
    assert (request.verified, request.answered) == (True, 200)
    [row] = await harness.rows(customer)
    assert request.headers["webhook-id"] == str(row["notification_id"]) and row["status"] == "delivered"
    verifier = standardwebhooks.Webhook(secret)
    assert verifier.verify(request.body, request.headers)["notification_id"] == str(row["notification_id"])
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="No matching signature"):
        verifier.verify(request.body.replace(b"sla_breached", b"sla_breachex"), request.headers)
    old = {**request.headers, "webhook-timestamp": str(int(request.headers["webhook-timestamp"]) - 3600)}
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        verifier.verify(request.body, old)
    with pytest.raises(standardwebhooks.WebhookVerificationError):  # another endpoint's secret
        standardwebhooks.Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode()).verify(
            request.body, request.headers
        )


@pytest.mark.parametrize("fault", ["wrong secret", "stale timestamp"])
async def test_a_receiver_refusing_the_signature_ends_in_a_dead_letter(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer, hooks: WebhookServer, fault: str
) -> None:
    """The receiver checks the signature itself: a sender signing with another secret, or with a
    clock an hour behind (a replayed timestamp), is refused with 401, which is final."""
    if fault == "wrong secret":
        harness = Harness(pool, producer, smtp, hooks, secret="not-the-receivers-secret")
    else:
        harness = Harness(pool, producer, smtp, hooks, wall_clock=lambda: time.time() - 3600)
    customer, case_id, _ = ids()
    harness.clock.now = datetime.now(UTC)
    await harness.deliver(breached(customer, case_id))
    for _ in range(3):
        await harness.run_loop(1)
        harness.clock.advance(seconds=5)
    [request] = hooks.received(harness.team_path)
    assert (request.verified, request.answered) == (False, 401)
    [row] = await harness.rows(customer)
    assert (row["status"], row["reason"], row["attempts"]) == ("failed", "http_401", 1)
    assert await harness.dead_letter(row["notification_id"]) == ("http_401", 1)
    events = await harness.events(str(row["notification_id"]))
    assert [t for t, _ in events] == [n.NOTIFICATION_SCHEDULED, n.NOTIFICATION_FAILED]
    assert events[-1][1]["final"] and events[-1][1]["reason"] == "http_401"


async def test_quiet_hours_across_a_time_zone_boundary_delay_to_the_right_instant(
    harness: Harness, smtp: SmtpServer
) -> None:
    """Quiet hours are read on Tokyo's wall clock (UTC+9), whose calendar day is not UTC's: the
    quiet hours that end at 07:00 on 3 March in Tokyo end at 22:00 on 2 March in UTC. One
    message comes before Tokyo's midnight (23:30 on 2 March there, the end is on the next local
    day), one after it (01:00 on 3 March there while it is still 2 March in UTC, the end is on the
    same local day); both wait until exactly that instant, not a second less."""
    customer, case_id, email = ids()
    quiet = {"start": "22:00", "end": "07:00", "time_zone": "Asia/Tokyo"}
    await harness.deliver(created(customer, email), preferences(customer, quiet_hours=quiet))
    ends = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 07:00 on 3 March in Tokyo
    harness.clock.now = START  # 14:30 UTC on 2 March = 23:30 on 2 March in Tokyo
    await harness.deliver(resolved(customer, f"{case_id}-a"))
    harness.clock.now = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # = 01:00 on 3 March in Tokyo
    await harness.deliver(resolved(customer, f"{case_id}-b"))
    rows = await harness.rows(customer)
    assert len(rows) == 2
    for row in rows:
        assert (row["status"], row["deliver_at"]) == ("scheduled", ends)
        [(_, scheduled)] = await harness.events(str(row["notification_id"]))
        assert scheduled["delayed_reason"] == "quiet_hours"
        assert datetime.fromisoformat(scheduled["deliver_at"]) == ends
    harness.clock.now = ends - timedelta(seconds=1)
    await harness.run_loop()
    assert [m for m in smtp.messages if m["To"] == email] == []
    harness.clock.now = ends
    await harness.run_loop()
    for row in rows:
        assert len(smtp.with_header("X-CRM-Notification-Id", str(row["notification_id"]))) == 1


async def test_a_customer_retry_that_would_fall_in_quiet_hours_waits_until_they_end(
    harness: Harness, hooks: WebhookServer
) -> None:
    """The first try goes just before quiet hours and fails; the backoff alone (about a second)
    would retry inside them. The retry waits for their end, as the first try would have."""
    customer, case_id, _ = ids()
    phone = f"+4915{uuid.uuid4().int % 10**9:09d}"
    quiet = {"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}
    await harness.deliver(created(customer, phone=phone), preferences(customer, quiet_hours=quiet))
    hooks.answer(harness.sms_path, [503, 200])
    harness.clock.now = datetime(2026, 3, 2, 20, 59, 59, 500000, tzinfo=UTC)  # 21:59:59.5 in Berlin (CET)
    await harness.deliver(resolved(customer, case_id))
    await harness.run_loop(1)
    [first] = hooks.received(harness.sms_path)
    assert first.answered == 503
    morning = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    [row] = await harness.rows(customer)
    assert (row["status"], row["reason"], row["next_attempt_at"]) == ("retrying", "http_503", morning)
    [failed] = [d for t, d in await harness.events(str(row["notification_id"])) if t == n.NOTIFICATION_FAILED]
    assert (failed["final"], datetime.fromisoformat(failed["next_attempt_at"])) == (False, morning)
    harness.clock.now = datetime(2026, 3, 2, 21, 0, 5, tzinfo=UTC)  # where the backoff alone would be
    await harness.run_loop()
    harness.clock.now = morning - timedelta(seconds=1)
    await harness.run_loop()
    assert len(hooks.received(harness.sms_path)) == 1  # nothing inside quiet hours
    harness.clock.now = morning
    await harness.run_loop()
    assert [r.answered for r in hooks.received(harness.sms_path)] == [503, 200]
    [row] = await harness.rows(customer)
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_quiet_hours_set_after_scheduling_hold_the_message_until_they_end(
    harness: Harness, smtp: SmtpServer
) -> None:
    """The message is scheduled at 21:30 in Berlin, when the customer has no quiet hours; before
    it goes, they set 21:00-07:00. It does not go inside them: it is scheduled again for 07:00
    (a second scheduled event saying so) and goes then, once."""
    customer, case_id, email = ids()
    await harness.deliver(created(customer, email))
    harness.clock.now = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 21:30 in Berlin (CET)
    await harness.deliver(resolved(customer, case_id))
    [row] = await harness.rows(customer)
    assert (row["status"], row["deliver_at"]) == ("scheduled", harness.clock.now)  # due at once
    quiet = {"start": "21:00", "end": "07:00", "time_zone": "Europe/Berlin"}
    await harness.deliver(preferences(customer, quiet_hours=quiet))
    await harness.run_loop()
    assert [m for m in smtp.messages if m["To"] == email] == []
    morning = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    [row] = await harness.rows(customer)
    assert (row["status"], row["deliver_at"], row["next_attempt_at"], row["attempts"]) == (
        "scheduled", morning, morning, 0
    )  # fmt: skip
    events = await harness.events(str(row["notification_id"]))
    assert [t for t, _ in events] == [n.NOTIFICATION_SCHEDULED, n.NOTIFICATION_SCHEDULED]
    assert events[0][1]["delayed_reason"] is None
    assert events[1][1]["delayed_reason"] == "quiet_hours"
    assert datetime.fromisoformat(events[1][1]["deliver_at"]) == morning
    harness.clock.now = morning - timedelta(seconds=1)
    await harness.run_loop()
    assert [m for m in smtp.messages if m["To"] == email] == []
    harness.clock.now = morning
    await harness.run_loop()
    assert len(smtp.with_header("X-CRM-Notification-Id", str(row["notification_id"]))) == 1
    [row] = await harness.rows(customer)
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_without_marketing_consent_the_service_critical_message_goes_and_the_survey_does_not(
    harness: Harness, smtp: SmtpServer
) -> None:
    customer, case_id, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(created(customer, email), consent(customer, "marketing", False))
    await harness.deliver(resolved(customer, case_id), survey(customer, case_id, harness.clock.now))
    await harness.run_loop()
    rows = {r["rule"]: r for r in await harness.rows(customer)}
    assert (rows["case_resolved"]["status"], rows["followup_survey"]["status"]) == ("sent", "suppressed")
    assert rows["followup_survey"]["reason"] == "no_consent"
    assert [m["X-CRM-Rule"] for m in smtp.messages if m["To"] == email] == ["case_resolved"]
    [(type_, data)] = await harness.events(str(rows["followup_survey"]["notification_id"]))
    assert type_ == n.NOTIFICATION_SUPPRESSED and data["reason"] == "no_consent" and data["channel"] == "email"


async def test_a_blocked_channel_is_never_used_even_for_service_critical_messages(
    harness: Harness, smtp: SmtpServer, hooks: WebhookServer
) -> None:
    customer, case_id, email = ids()
    phone = "+4915100000001"
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(created(customer, email, phone), consent(customer, "service", False, "email"))
    await harness.deliver(resolved(customer, case_id))
    await harness.run_loop()
    [row] = await harness.rows(customer)
    assert (row["channel"], row["status"]) == ("sms", "sent")  # the SMS provider accepted it
    assert [m for m in smtp.messages if m["To"] == email] == []
    [sms] = [r for r in hooks.received(harness.sms_path) if orjson.loads(r.body)["to"] == phone]
    assert orjson.loads(sms.body)["notification_id"] == str(row["notification_id"])


async def test_consent_withdrawn_while_a_message_waits_suppresses_it(harness: Harness, smtp: SmtpServer) -> None:
    customer, case_id, email = ids()
    await harness.deliver(created(customer, email), consent(customer, "marketing", True, "email"))
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(survey(customer, case_id, harness.clock.now + timedelta(hours=1)))
    await harness.deliver(consent(customer, "marketing", False, "email"))
    harness.clock.advance(hours=2)
    await harness.run_loop()
    [row] = await harness.rows(customer)
    assert (row["status"], row["reason"]) == ("suppressed", "no_consent")
    assert [t for t, _ in await harness.events(str(row["notification_id"]))] == [
        n.NOTIFICATION_SCHEDULED,
        n.NOTIFICATION_SUPPRESSED,
    ]
    assert [m for m in smtp.messages if m["To"] == email] == []


def opened(customer: str, case_id: str) -> Envelope:
    return case_event("crm.case.opened.v1", customer, case_id, type="repair", priority="normal", status="new",
                      team="support", opened_by=None)  # fmt: skip


async def test_frequency_cap_suppresses_ordinary_messages_when_digests_are_off(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer, hooks: WebhookServer
) -> None:
    harness = Harness(pool, producer, smtp, hooks, domain.DigestPolicy(timedelta(hours=1), enabled=False))
    customer, _, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(created(customer, email))
    for k in range(7):  # cap: 5 per day
        await harness.deliver(case_event("crm.case.opened.v1", customer, f"case-{k}", type="repair",
                                         priority="normal", status="new", team="support", opened_by=None))  # fmt: skip
    statuses = [r["status"] for r in await harness.rows(customer)]
    assert statuses.count("scheduled") == 5 and statuses.count("suppressed") == 2
    caps = await harness.pool.fetch("SELECT reason FROM notifications WHERE customer_id = $1 AND status = 'suppressed'",
                                    customer)  # fmt: skip
    assert {r["reason"] for r in caps} == {"cap"}


async def test_the_staff_cap_holds_back_warnings_but_never_an_sla_breach(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer, hooks: WebhookServer
) -> None:
    harness = Harness(pool, producer, smtp, hooks, staff_cap=domain.Cap(1, timedelta(hours=1)))
    customer, case_id, _ = ids()
    harness.clock.now = datetime.now(UTC)
    await harness.deliver(warned(customer, f"{case_id}-1"), warned(customer, f"{case_id}-2"))
    await harness.deliver(breached(customer, f"{case_id}-1"), breached(customer, f"{case_id}-2"))
    await harness.run_loop()
    outcomes = sorted((r["rule"], r["status"], r["reason"]) for r in await harness.rows(customer))
    assert outcomes == [
        ("sla_breached", "delivered", None),
        ("sla_breached", "delivered", None),
        ("sla_warning", "delivered", None),
        ("sla_warning", "suppressed", "cap"),
    ]
    rules = sorted(orjson.loads(r.body)["rule"] for r in hooks.received(harness.team_path))
    assert rules == ["sla_breached", "sla_breached", "sla_warning"]


async def test_a_case_event_before_the_customer_is_known_waits_for_the_profile(
    harness: Harness, smtp: SmtpServer
) -> None:
    customer, case_id, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(resolved(customer, case_id))  # the case topic ran ahead of the intake topic
    await harness.run_loop()
    [row] = await harness.rows(customer)
    assert row["status"] == "pending"
    await harness.deliver(created(customer, email))
    harness.clock.advance(seconds=2)
    await harness.run_loop()
    [row] = await harness.rows(customer)
    assert row["status"] == "sent" and len(smtp.with_header("X-CRM-Notification-Id", str(row["notification_id"]))) == 1


async def test_merged_customers_addresses_and_ids_are_followed(harness: Harness, smtp: SmtpServer) -> None:
    survivor, case_id, _ = ids()
    merged, _, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    merge = intake(
        "crm.customer.merged.v1", survivor, survivor_id=survivor, merged_id=merged,
        linked_by={"kind": "email", "value": email}, reason="same email",
    )  # fmt: skip
    await harness.deliver(created(survivor), created(merged, email), merge)
    await harness.deliver(resolved(merged, case_id))  # a case opened under the merged id
    await harness.run_loop()
    [row] = await harness.rows(survivor)
    assert (row["recipient"], row["status"]) == (f"customer:{survivor}", "sent")
    assert len([m for m in smtp.messages if m["To"] == email]) == 1


async def test_an_email_whose_send_was_interrupted_is_never_sent_again(harness: Harness, smtp: SmtpServer) -> None:
    """The process died after the SMTP server took the message and before it was recorded."""
    customer, case_id, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(created(customer, email), resolved(customer, case_id))
    async with harness.pool.acquire() as conn:
        [(row, message)] = await worker._claim(conn, harness.ctx, 10)  # committed as "sending" with a lease
    await harness.sender.send(message)
    # ... and here the process died. After the lease, the next round recovers it.
    harness.clock.advance(seconds=31)
    await harness.run_loop()
    [stored] = await harness.rows(customer)
    assert (stored["status"], stored["reason"]) == ("failed", "outcome_unknown")
    assert len(smtp.with_header("X-CRM-Notification-Id", row.notification_id)) == 1
    assert (
        await harness.pool.fetchval(
            "SELECT reason FROM notification_dead_letters WHERE notification_id = $1", stored["notification_id"]
        )
        == "outcome_unknown"
    )


@pytest.mark.parametrize("channel", ["webhook", "sms"])
async def test_a_webhook_or_sms_whose_send_was_interrupted_goes_again_with_the_same_key(
    harness: Harness, hooks: WebhookServer, channel: str
) -> None:
    """The process died after the receiver took the message and before it was recorded. Webhooks
    and SMS are at least once: after the lease the message goes again, with the same
    Idempotency-Key and a fresh valid signature over the same body, and the receiver can drop the
    copy; notification records one success."""
    customer, case_id, _ = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    if channel == "webhook":
        path = harness.team_path
        await harness.deliver(breached(customer, case_id))  # no owner: the team's webhook only
    else:
        path = harness.sms_path
        await harness.deliver(created(customer, phone=f"+4915{uuid.uuid4().int % 10**9:09d}"))
        await harness.deliver(resolved(customer, case_id))
    async with harness.pool.acquire() as conn:
        [(row, message)] = await worker._claim(conn, harness.ctx, 10)  # committed as "sending" with a lease
    assert row.channel == channel
    await harness.sender.send(message)
    # ... and here the process died. After the lease, the next round recovers it.
    harness.clock.advance(seconds=31)
    await harness.run_loop()
    [stored] = await harness.rows(customer)
    assert (stored["status"], stored["reason"]) == ("retrying", "outcome_unknown")
    assert len(hooks.received(path)) == 1
    harness.clock.advance(seconds=2)  # past the backoff (1 s +-20 %)
    await harness.run_loop()
    first, again = hooks.received(path)
    assert (first.answered, again.answered) == (200, 200) and first.verified and again.verified
    assert delivery.verify_signature(SECRET, again.headers, again.body, time.time())
    assert first.idempotency_key == again.idempotency_key == row.notification_id
    assert orjson.loads(again.body) == orjson.loads(first.body)  # the same message...
    assert orjson.loads(again.body)["notification_id"] == again.idempotency_key  # ...whose key is signed
    assert (first.duplicate, again.duplicate) == (False, True)  # what the receiver drops
    [stored] = await harness.rows(customer)
    assert (stored["status"], stored["attempts"]) == ("delivered" if channel == "webhook" else "sent", 2)
    events = await harness.events(row.notification_id)
    outcomes = [n.NOTIFICATION_SENT, n.NOTIFICATION_DELIVERED] if channel == "webhook" else [n.NOTIFICATION_SENT]
    assert [t for t, _ in events] == [n.NOTIFICATION_SCHEDULED, n.NOTIFICATION_FAILED, *outcomes]
    failed = events[1][1]
    assert (failed["attempt"], failed["reason"], failed["final"]) == (1, "outcome_unknown", False)
    assert await harness.pool.fetchval("SELECT count(*) FROM notification_dead_letters") == 0


async def test_messages_over_the_cap_arrive_as_one_digest_after_the_window_even_across_a_restart(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer, hooks: WebhookServer
) -> None:
    harness = Harness(pool, producer, smtp, hooks)  # cap: 5 per day; digest window: 1 hour
    customer, case_id, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 10, tzinfo=UTC)
    await harness.deliver(created(customer, email), preferences(customer, language="de-AT"))
    for k in range(5):
        await harness.deliver(opened(customer, f"{case_id}-{k}"))
    await harness.run_loop()
    assert len([m for m in smtp.messages if m["To"] == email]) == 5
    over = [opened(customer, f"{case_id}-{k}") for k in range(5, 8)]
    for k, event in enumerate(over):
        harness.clock.now = datetime(2026, 3, 2, 9, 20 + 10 * k, tzinfo=UTC)
        await harness.deliver(event)
    await harness.deliver(over[0])  # redelivered: folded once
    await harness.deliver(resolved(customer, case_id))  # critical, in the same window: goes at once
    await harness.run_loop()
    mails = [m for m in smtp.messages if m["To"] == email]
    assert [m["X-CRM-Rule"] for m in mails] == ["case_opened"] * 5 + ["case_resolved"]

    rows = await harness.rows(customer)
    folded = [r for r in rows if r["status"] == "digested"]
    [digest] = [r for r in rows if r["rule"] == "digest"]
    assert len(folded) == 3 and {r["digest_id"] for r in folded} == {digest["notification_id"]}
    assert (digest["status"], digest["deliver_at"]) == ("scheduled", datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    digest_id = str(digest["notification_id"])
    assert digest_id == domain.notification_id_for(
        domain.digest_key(f"customer:{customer}", datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    )
    for row in folded:
        [(type_, data)] = await harness.events(str(row["notification_id"]))
        assert type_ == n.NOTIFICATION_SCHEDULED and data["digest_id"] == digest_id
        assert datetime.fromisoformat(data["deliver_at"]) == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

    # The service restarts before the digest is due: a new context and loop over the same database.
    restarted = Harness(pool, producer, smtp, hooks)
    restarted.clock.now = datetime(2026, 3, 2, 9, 59, 59, tzinfo=UTC)
    await restarted.run_loop()
    assert smtp.with_header("X-CRM-Notification-Id", digest_id) == []
    restarted.clock.now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    await restarted.run_loop()
    restarted.clock.advance(minutes=5)
    await restarted.run_loop()
    [mail] = smtp.with_header("X-CRM-Notification-Id", digest_id)
    assert mail["To"] == email and mail["Content-Language"] == "de" and mail["X-CRM-Rule"] == "digest"
    assert mail["Subject"] == "Ihre Neuigkeiten (3)"
    assert mail["Message-ID"] == f"<{digest_id}@notification.crm>"
    body = mail.get_content()
    for k in range(5, 8):
        assert f"Wir haben Ihr Anliegen erhalten (Fall {case_id}-{k})" in body
    assert f"Fall {case_id}-4)" not in body and "gelöst" not in body
    assert len([m for m in smtp.messages if m["To"] == email]) == 7  # 5 + the critical one + one digest
    assert [t for t, _ in await restarted.events(digest_id)] == [n.NOTIFICATION_SCHEDULED, n.NOTIFICATION_SENT]
    [(_, sent)] = [e for e in await restarted.events(digest_id) if e[0] == n.NOTIFICATION_SENT]
    assert (sent["notification_id"], sent["rule"], sent["customer_id"]) == (digest_id, "digest", customer)


async def test_consent_withdrawn_before_a_digest_goes_drops_the_messages_it_no_longer_allows(
    harness: Harness, smtp: SmtpServer
) -> None:
    customer, case_id, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 10, tzinfo=UTC)
    await harness.deliver(created(customer, email), consent(customer, "marketing", True))
    for k in range(5):
        await harness.deliver(opened(customer, f"{case_id}-{k}"))
    await harness.deliver(opened(customer, f"{case_id}-5"), survey(customer, case_id, harness.clock.now))
    await harness.deliver(consent(customer, "marketing", False))
    harness.clock.now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    await harness.run_loop()
    rows = {(r["rule"], r["status"]) for r in await harness.rows(customer)}
    assert {("digest", "sent"), ("case_opened", "digested"), ("followup_survey", "suppressed")} <= rows
    [mail] = [m for m in smtp.messages if m["To"] == email and m["X-CRM-Rule"] == "digest"]
    assert mail["Subject"] == "Your updates (1)" and "How did we do" not in mail.get_content()


# --- privacy (docs/product.md §9): sealed at rest, erased by crypto-shredding -----------------------------------


def secret_email() -> str:
    """An address whose local part occurs nowhere else (ids() reuses its tag in the customer id)."""
    return f"zebra.{uuid.uuid4().hex[:12]}@example.com"


async def plaintext_hits(pool: asyncpg.Pool, needles: dict[str, str]) -> list[str]:
    """Every row of every table of notification's database, as text, searched for each needle."""
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    hits = []
    for t in tables:
        for what, needle in needles.items():
            found = await pool.fetchval(
                f'SELECT count(*) FROM "{t["table_name"]}" AS t WHERE t::text ILIKE $1', f"%{needle}%"
            )
            if found:
                hits.append(f"{t['table_name']}: {found} rows with the {what}")
    return hits


def erased(customer: str, *merged: str) -> Envelope:
    return intake("crm.customer.erased.v1", customer, erased_ids=[customer, *merged])


async def listed(harness: Harness, customer: str) -> list[dict[str, Any]]:
    """What GET /v1/notifications?customer_id= answers (the route's own store and handler calls)."""
    async with harness.pool.acquire() as conn:
        ids = await store.customer_ids(conn, customer)
        items = await store.listing(conn, ids, None, 100)
    return await handlers.readable_listing(harness.keyring, items)


async def test_addresses_and_messages_are_sealed_at_rest_and_readable_where_needed(
    harness: Harness, smtp: SmtpServer, hooks: WebhookServer
) -> None:
    customer, case_id, _ = ids()
    email = secret_email()
    phone = f"+4915{uuid.uuid4().int % 10**9:09d}"
    reason = f"Technician Ferdinand{uuid.uuid4().hex[:8]} replaced it"
    needles = {"email": email.split("@")[0], "phone": phone[3:], "reason": reason.split()[1]}
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(created(customer, email, phone), preferences(customer, language="de"))
    await harness.deliver(resolved(customer, case_id, reason))
    await harness.run_loop()
    [row] = await harness.rows(customer)
    [mail] = smtp.with_header("X-CRM-Notification-Id", str(row["notification_id"]))
    assert mail["To"] == email and mail["Subject"] == f"Ihr Fall {case_id} ist gelöst"
    assert reason in mail.get_content()  # rendered from the unsealed reason
    # At rest: tokens, and who sealed them.
    assert row["sealed_by"] == customer and row["address"].startswith("v1.") and row["body"].startswith("v1.")
    contacts = await harness.pool.fetch("SELECT * FROM notification_contacts WHERE customer_id = $1", customer)
    assert len(contacts) == 2 and {c["owner"] for c in contacts} == {customer}
    assert all(c["value"].startswith("v1.") for c in contacts)
    assert await plaintext_hits(harness.pool, needles) == []
    # A redelivered identifier (sealed anew, another nonce) is still kept once.
    await harness.deliver(intake("crm.customer.identifiers_added.v1", customer, identifiers=[
        {"kind": "email", "value": email}]))  # fmt: skip
    assert (
        await harness.pool.fetchval("SELECT count(*) FROM notification_contacts WHERE customer_id = $1", customer) == 2
    )
    # Agents read the subject as text.
    [item] = await listed(harness, customer)
    assert item["subject"] == f"Ihr Fall {case_id} ist gelöst" and "sealed_by" not in item


async def test_erasure_masks_messages_suppresses_unsent_ones_and_leaves_no_personal_value(
    harness: Harness, smtp: SmtpServer, hooks: WebhookServer
) -> None:
    survivor, case_id, _ = ids()
    merged, _, _ = ids()
    email = secret_email()
    phone = f"+4915{uuid.uuid4().int % 10**9:09d}"
    reason = f"Technician Quintus{uuid.uuid4().hex[:8]} replaced it"
    needles = {"email": email.split("@")[0], "phone": phone[3:], "reason": reason.split()[1]}
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    merge = intake(
        "crm.customer.merged.v1", survivor, survivor_id=survivor, merged_id=merged,
        linked_by={"kind": "phone", "value": phone}, reason="same phone",
    )  # fmt: skip
    # The survivor's email is sealed under its key, the phone under the merged id's key.
    await harness.deliver(created(survivor, email), created(merged, phone=phone), merge,
                          consent(survivor, "marketing", True))  # fmt: skip
    await harness.deliver(resolved(merged, case_id, reason))
    await harness.run_loop()
    sent = len([m for m in smtp.messages if m["To"] == email])
    assert sent == 1
    # Not sent yet: a survey due tomorrow; and a staff message about the case (the webhook
    # receiver checks the timestamp against its own clock).
    harness.clock.now = datetime.now(UTC)
    await harness.deliver(survey(survivor, case_id, harness.clock.now + timedelta(days=1)))
    await harness.deliver(breached(survivor, case_id))
    await harness.run_loop()
    rows = {r["rule"]: r for r in await harness.rows(survivor)}
    assert (rows["case_resolved"]["status"], rows["followup_survey"]["status"]) == ("sent", "scheduled")
    assert rows["sla_breached"]["status"] == "delivered"

    KEYS.erase(survivor)  # intake destroys the keys, then says so
    KEYS.erase(merged)
    event = erased(survivor, merged)
    await harness.deliver(event)
    await harness.deliver(event)  # redelivered: changes nothing
    async with harness.pool.acquire() as conn, conn.transaction():
        await erasure.erase(conn, harness.ctx, [survivor, merged])  # applied twice: the same end
    harness.clock.advance(days=2)
    await harness.run_loop()

    assert await plaintext_hits(harness.pool, needles) == []
    assert (
        await harness.pool.fetchval(
            "SELECT count(*) FROM notification_contacts WHERE customer_id = ANY($1::text[]) OR owner = ANY($1::text[])",
            [survivor, merged],
        )
        == 0
    )
    rows = {r["rule"]: r for r in await harness.rows(survivor)}
    resolved_row, survey_row = rows["case_resolved"], rows["followup_survey"]
    assert (resolved_row["status"], resolved_row["address"], resolved_row["subject"], resolved_row["body"]) == (
        "sent",
        None,
        "[erased]",
        "[erased]",
    )
    assert (survey_row["status"], survey_row["reason"], survey_row["address"]) == ("suppressed", "no_address", None)
    assert resolved_row["data"]["reason"] == "[erased]" and "sealed" not in resolved_row["data"]
    assert rows["sla_breached"]["status"] == "delivered"  # staff messages hold nothing of the customer
    survey_events = [t for t, _ in await harness.events(str(survey_row["notification_id"]))]
    assert survey_events == [n.NOTIFICATION_SCHEDULED, n.NOTIFICATION_SUPPRESSED]  # one suppression only
    assert len([m for m in smtp.messages if m["To"] == email]) == sent  # nothing sent again
    # Agents still see the messages' shape, with the content erased.
    items = await listed(harness, merged)
    subjects = {i["rule"]: i["subject"] for i in items}
    assert subjects == {
        "case_resolved": "[erased]",
        "followup_survey": "[erased]",
        "sla_breached": subjects["sla_breached"],
    }
    assert subjects["sla_breached"].startswith("SLA breached")
    assert {i["customer_id"] for i in items} == {survivor}

    # A case event for the erased customer makes no message and keeps nothing readable.
    await harness.deliver(resolved(survivor, f"{case_id}-2", reason))
    later = [r for r in await harness.rows(survivor) if r["source_event_type"] == "crm.case.status_changed.v1"
             and r["status"] != "sent"]  # fmt: skip
    assert [(r["status"], r["reason"], r["address"]) for r in later] == [("suppressed", "no_address", None)]


async def test_a_message_whose_customer_is_erased_before_it_goes_is_not_sent(
    harness: Harness, smtp: SmtpServer
) -> None:
    """The key is gone, the erasure event has not reached this instance yet: nothing goes out."""
    customer, case_id, email = ids()
    harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await harness.deliver(created(customer, email), consent(customer, "marketing", True))
    await harness.deliver(survey(customer, case_id, harness.clock.now + timedelta(hours=1)))
    KEYS.erase(customer)
    harness.keyring.forget([customer])  # the cache entry expired
    harness.clock.advance(hours=2)
    await harness.run_loop()
    [row] = await harness.rows(customer)
    assert (row["status"], row["reason"]) == ("suppressed", "no_address")
    assert [m for m in smtp.messages if m["To"] == email] == []


class DownVault:
    """The vault not answering."""

    async def lookup(self, customer_ids: Any, create: bool) -> tuple[dict[str, bytes], set[str]]:
        raise KeysUnavailable("key vault not reachable: ConnectError")


async def test_an_unreachable_vault_retries_the_batch_and_is_never_read_as_an_erasure(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, smtp: SmtpServer, hooks: WebhookServer
) -> None:
    down = Harness(pool, producer, smtp, hooks, keys=DownVault())
    customer, case_id, email = ids()
    down.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    events = (created(customer, email), resolved(customer, case_id))
    with pytest.raises(KeysUnavailable):
        await down.deliver(*events)
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0  # retried, not poison
    assert await pool.fetchval("SELECT count(*) FROM notification_contacts") == 0
    assert await down.rows(customer) == []
    up = Harness(pool, producer, smtp, hooks)
    up.clock.now = down.clock.now
    await up.deliver(*events)  # the batch again, once the vault answers
    [row] = await up.rows(customer)
    assert row["status"] == "scheduled"
    # The delivery loop waits too (worker.run logs it and tries again): nothing claimed or suppressed.
    with pytest.raises(KeysUnavailable):
        await down.run_loop(1)
    [row] = await up.rows(customer)
    assert row["status"] == "scheduled" and smtp.with_header("X-CRM-Notification-Id", str(row["notification_id"])) == []
    await up.run_loop()
    assert len(smtp.with_header("X-CRM-Notification-Id", str(row["notification_id"]))) == 1


async def test_rows_from_before_sealing_are_sealed_by_the_delivery_loop(harness: Harness, smtp: SmtpServer) -> None:
    customer, case_id, _ = ids()
    gone, _, _ = ids()
    email, gone_email = secret_email(), secret_email()
    key_of(customer)
    KEYS.erase(gone)
    now = harness.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for cid, address in ((customer, email), (gone, gone_email)):
        await harness.pool.execute(
            "INSERT INTO notification_contacts (customer_id, kind, value, added_at) VALUES ($1, 'email', $2, $3)",
            cid, address, now,
        )  # fmt: skip
        await harness.pool.execute(
            "INSERT INTO notifications (notification_id, idempotency_key, rule, source_event_id, source_event_type,"
            " customer_id, audience, recipient, purpose, critical, data, traceparent, channel, address, language,"
            " subject, body, status, next_attempt_at, created_at, updated_at)"
            " VALUES ($1, $2, 'case_resolved', $3, 'crm.case.status_changed.v1', $4, 'customer', $5, 'service',"
            " true, $6::jsonb, $7, 'email', $8, 'en', 'Your case is resolved', $9, 'scheduled', $10, $10, $10)",
            uuid.uuid4(), f"legacy|{cid}", uuid.uuid4(), cid, f"customer:{cid}", {"case_id": case_id}, TP, address,
            f"Resolved for {address}", now,
        )  # fmt: skip
    await harness.run_loop()
    needles = {"email": email.split("@")[0], "erased email": gone_email.split("@")[0]}
    assert await plaintext_hits(harness.pool, needles) == []
    [mail] = [m for m in smtp.messages if m["To"] == email]
    assert mail.get_content().strip() == f"Resolved for {email}"
    assert [m for m in smtp.messages if m["To"] == gone_email] == []
    [gone_row] = await harness.rows(gone)
    assert (gone_row["status"], gone_row["reason"], gone_row["body"]) == ("suppressed", "no_address", "[erased]")
    assert await harness.pool.fetchval("SELECT count(*) FROM notification_contacts WHERE customer_id = $1", gone) == 0
    [(owner, value)] = await harness.pool.fetch(
        "SELECT owner, value FROM notification_contacts WHERE customer_id = $1", customer
    )
    assert owner == customer and value.startswith("v1.")


def reply(customer: str, case_id: str, channel: str, body: str) -> Envelope:
    return case_event(
        "crm.case.reply_sent.v1", customer, case_id, channel=channel, author="ana", body=body, team="support",
        type="repair", priority="normal",
    )  # fmt: skip


async def test_an_agents_reply_goes_on_its_channel_at_night_and_its_retry_is_not_held_either(
    harness: Harness, hooks: WebhookServer, smtp: SmtpServer
) -> None:
    """Inside the customer's quiet hours, preferring email: the SMS reply goes at once, its
    sealed body opened into the text; a failed try is retried after the backoff, not in the morning."""
    customer, case_id, email = ids()
    phone = f"+4915{uuid.uuid4().int % 10**9:09d}"
    quiet = {"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}
    await harness.deliver(
        created(customer, email, phone), preferences(customer, quiet_hours=quiet, preferred_channel="email")
    )
    hooks.answer(harness.sms_path, [503, 200])
    harness.clock.now = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 23:00 in Berlin (CET)
    await harness.deliver(reply(customer, case_id, "sms", "The technician comes at 8."))
    [row] = await harness.rows(customer)
    assert (row["rule"], row["channel"], row["deliver_at"]) == ("agent_reply", "sms", harness.clock.now)
    await harness.run_loop(1)
    [row] = await harness.rows(customer)
    assert row["status"] == "retrying" and row["next_attempt_at"] < harness.clock.now + timedelta(seconds=5)
    harness.clock.now += timedelta(seconds=5)
    await harness.run_loop()
    tries = hooks.received(harness.sms_path)
    assert [r.answered for r in tries] == [503, 200]
    assert orjson.loads(tries[-1].body)["text"] == f"Re: your case {case_id}: The technician comes at 8."
    assert [m for m in smtp.messages if m["To"] == email] == []  # never rerouted to email
    [row] = await harness.rows(customer)
    assert (row["status"], row["attempts"]) == ("sent", 2)
