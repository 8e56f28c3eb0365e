"""The audit log's writer against PostgreSQL: nothing a caller sends can stop it, and nothing is
lost without being counted. And failed logins, limited per client address."""

import asyncpg
import pytest
from eventkit.telemetry import AUDIT_DROPPED, AUDIT_UNWRITABLE
from servicekit import auth
from servicekit.auth import AUDIT_VALUE_CHARS, AuditLog, Authenticator, RateLimiter, audit_text
from servicekit.http import ApiError
from starlette.requests import Request


def test_audit_text_is_storable_and_bounded() -> None:
    assert audit_text("a\x00b") == "a\ufffdb"
    assert audit_text("x\ud800y") == "x?y"  # an unpaired surrogate cannot be encoded, let alone stored
    assert audit_text("c" * 10_000) == "c" * AUDIT_VALUE_CHARS
    assert audit_text("ok-123") == "ok-123"


async def test_hostile_values_are_written_made_storable(pool: asyncpg.Pool) -> None:
    audit = AuditLog(lambda: pool, "t-audit")
    audit.record("k1", "GET", "/v1/customers/{customer_id}/timeline", "\x00", {}, 403)
    audit.record("k1", "GET", "/v1/cases/{case_id}", "c\ud800", {"case_id": "\x00\udfff" + "z" * 500}, 404)
    audit.record("k1", "GET", "/v1/customers/{customer_id}", "cust-1", {}, 200)
    await audit.flush()
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT customer_id, target, status FROM audit_log ORDER BY id")
    assert [r["status"] for r in rows] == [403, 404, 200]
    assert rows[0]["customer_id"] == "\ufffd"
    assert rows[1]["customer_id"] == "c?"
    assert len(rows[1]["target"]) < 300  # the long value cut to AUDIT_VALUE_CHARS


async def test_a_row_the_database_refuses_is_counted_and_the_others_are_written(pool: asyncpg.Pool) -> None:
    audit = AuditLog(lambda: pool, "t-audit-row")
    before = AUDIT_UNWRITABLE.labels("t-audit-row")._value.get()
    audit.record("k1", "GET", "/a", None, {}, 200)
    audit.record("k1", "GET", "/b", None, {}, 2**40)  # no int4: refused, whatever made it
    audit.record("k1", "GET", "/c", None, {}, 201)
    await audit.flush()
    await audit.flush()  # nothing left to retry: the refused row is not queued again
    async with pool.acquire() as conn:
        assert [r["route"] for r in await conn.fetch("SELECT route FROM audit_log ORDER BY id")] == ["/a", "/c"]
    assert AUDIT_UNWRITABLE.labels("t-audit-row")._value.get() - before == 1


async def test_records_wait_while_the_database_is_away_and_past_the_limit_are_counted(
    monkeypatch, pool: asyncpg.Pool
) -> None:
    monkeypatch.setattr(auth, "AUDIT_QUEUE_LIMIT", 3)
    audit = AuditLog(lambda: None, "t-audit-full")  # no pool yet: records wait
    before = AUDIT_DROPPED.labels("t-audit-full")._value.get()
    for n in range(5):
        audit.record("k1", "GET", f"/{n}", None, {}, 200)
    assert AUDIT_DROPPED.labels("t-audit-full")._value.get() - before == 2
    audit._pool = lambda: pool
    await audit.flush()
    async with pool.acquire() as conn:
        assert [r["route"] for r in await conn.fetch("SELECT route FROM audit_log ORDER BY id")] == ["/0", "/1", "/2"]


# --- failed logins -------------------------------------------------------------------------------


def request_from(address: str, key: str) -> Request:
    headers = [(b"authorization", f"Bearer {key}".encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (address, 5000)})


async def test_invalid_keys_are_limited_per_client_address(pool: asyncpg.Pool) -> None:
    good = "crm_good_" + "g" * 30
    authenticator = Authenticator(lambda: pool, good, RateLimiter(1000, 1000), RateLimiter(0.001, 3))
    for n in range(3):
        with pytest.raises(ApiError) as info:
            await authenticator.authenticate(request_from("10.0.0.1", f"guess-{n}"))
        assert info.value.status == 401
    with pytest.raises(ApiError) as info:  # the fourth guess from that address
        await authenticator.authenticate(request_from("10.0.0.1", "guess-3"))
    assert info.value.status == 429 and info.value.body["error"] == "too_many_failed_logins"
    assert int((info.value.headers or {})["Retry-After"]) >= 1
    # a valid key from that address (a proxy, a NAT) is not held up, nor another address
    assert (await authenticator.authenticate(request_from("10.0.0.1", good))).key_id == "bootstrap-admin"
    with pytest.raises(ApiError) as info:
        await authenticator.authenticate(request_from("10.0.0.2", "guess-0"))
    assert info.value.status == 401


async def test_rows_left_when_the_database_goes_away_during_the_row_by_row_retry_wait(
    monkeypatch, pool: asyncpg.Pool
) -> None:
    audit = AuditLog(lambda: pool, "t-audit-lost")
    for route in ("/a", "/b", "/c"):
        audit.record("k1", "GET", route, None, {}, 200)
    audit.record("k1", "GET", "/bad", None, {}, 2**40)

    async def away(self, conn, batch):  # the first row written, then the database gone
        return batch[1:]

    monkeypatch.setattr(AuditLog, "_one_by_one", away)
    with pytest.raises(ConnectionError):
        await audit.flush()
    assert [r[3] for r in audit._pending] == ["/b", "/c", "/bad"]  # kept for the next round
