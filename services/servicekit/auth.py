"""Who is calling, what they may do, how often, and a record of it (docs/product.md §9).

- API keys: `Authorization: Bearer <key>`, never in a URL (a browser's live timeline opens with
  a short-lived ticket instead: streamtickets.py). Keys are random; services store and compare SHA-256
  hashes only, projected from crm.auth.* events, so a key created or revoked at intake is known
  to every service. A bootstrap admin key from settings gets the first keys made.
- Scopes: `channel:<name>` may post interactions of that channel; `agent` reads timelines and
  customers and acts on cases; `ops` reads analytics; `admin` may do everything, including keys,
  export and the audit log.
- 401 without valid credentials, 403 outside the key's scopes, 429 with Retry-After past the
  per-key rate; each with a JSON reason.
- Audit: every authenticated request is appended to audit_log (key id, method, route template,
  customer id, status), buffered and written in batches.
"""

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import orjson
from eventkit.db import TRANSIENT_ERRORS
from eventkit.envelope import Envelope
from eventkit.telemetry import AUDIT_DROPPED, AUDIT_UNWRITABLE
from fastapi import Depends, Request

from contracts.security import KEY_CREATED, KEY_REVOKED
from servicekit.http import ApiError

log = logging.getLogger(__name__)
CACHE_SECONDS = 5.0  # how long a key lookup is trusted; revocation takes effect within this


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, key). The key is shown once; only its hash is kept."""
    key_id = secrets.token_hex(6)
    return key_id, f"crm_{key_id}_{secrets.token_urlsafe(32)}"


class KeyProjection:
    """Every service's copy of the API keys, from crm.auth.* events."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            if e.type == KEY_CREATED:
                await conn.execute(
                    "INSERT INTO api_keys (key_id, name, scopes, key_sha256, created_at) VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (key_id) DO NOTHING",
                    e.data["key_id"],
                    e.data["name"],
                    e.data["scopes"],
                    e.data["key_sha256"],
                    e.time,
                )
            elif e.type == KEY_REVOKED:
                await conn.execute(
                    "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
                    e.data["key_id"],
                    e.time,
                )


class RateLimiter:
    """A token bucket per key: `rate` requests a second, bursts up to `burst`. Per process."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str) -> float:
        """0 if allowed now; else the seconds until the next request would be."""
        now = time.monotonic()
        tokens = self._tokens(key_id, now)
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate

    def _tokens(self, key_id: str, now: float) -> float:
        if len(self._buckets) > 100_000:  # many callers (addresses): forget them all, not the memory
            self._buckets.clear()
        tokens, last = self._buckets.get(key_id, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)


# What an audit record may hold of what a caller sent (path parameters): enough to tell the
# target, never so much that one request makes a large row.
AUDIT_VALUE_CHARS = 200
AUDIT_QUEUE_LIMIT = 100_000


def audit_text(value: str) -> str:
    """A value PostgreSQL stores as text: no NUL, no unpaired surrogate, at most AUDIT_VALUE_CHARS."""
    value = value[:AUDIT_VALUE_CHARS].replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")  # an unpaired surrogate becomes "?"


_AuditRecord = tuple[datetime, str, str, str, str | None, str | None, int]
_AUDIT_COLUMNS = ["at", "key_id", "method", "route", "customer_id", "target", "status"]


class AuditLog:
    """Appends audit records in batches (every `interval_s`), off the request's path.

    Nothing a caller sends can stop it: values are made storable before they are queued; a batch
    the database refuses is written row by row, and a row refused alone is counted and logged
    (route and status only) instead of blocking the others. While the database is away records
    wait, up to AUDIT_QUEUE_LIMIT; past it they are dropped, counted and logged."""

    def __init__(self, pool_getter: Callable[[], asyncpg.Pool | None], service: str, interval_s: float = 0.25) -> None:
        self._pool = pool_getter
        self._interval_s = interval_s
        self._pending: list[_AuditRecord] = []
        self._unwritable = AUDIT_UNWRITABLE.labels(service)
        self._dropped = AUDIT_DROPPED.labels(service)
        self._dropped_since_logged = 0

    def record(
        self, key_id: str, method: str, route: str, customer_id: str | None, target: dict[str, str], status: int
    ) -> None:
        """`target`: the route's other path parameters (case_id, key_id...), kept as JSON text."""
        if len(self._pending) >= AUDIT_QUEUE_LIMIT:
            self._dropped.inc()
            self._dropped_since_logged += 1
            return
        text = orjson.dumps({audit_text(k): audit_text(v) for k, v in target.items()}).decode() if target else None
        customer = audit_text(customer_id) if customer_id is not None else None
        self._pending.append(
            (datetime.now(UTC), audit_text(key_id), method[:16], audit_text(route), customer, text, status)
        )

    async def flush(self) -> None:
        if self._dropped_since_logged:
            log.error("audit queue full: %d records dropped", self._dropped_since_logged)
            self._dropped_since_logged = 0
        pool = self._pool()
        if not self._pending or pool is None:
            return
        batch, self._pending = self._pending, []
        try:
            async with pool.acquire() as conn:
                try:
                    await conn.copy_records_to_table("audit_log", records=batch, columns=_AUDIT_COLUMNS)
                except TRANSIENT_ERRORS:
                    raise
                except Exception:  # something in the batch it will not take: each row on its own
                    batch = await self._one_by_one(conn, batch)
                    if batch:  # the database went away meanwhile: the rest waits for the next round
                        raise ConnectionError("database lost while writing audit rows one by one") from None
        except Exception:
            self._pending = batch + self._pending  # the database away: try again next round
            raise

    async def _one_by_one(self, conn: asyncpg.Connection, batch: list[_AuditRecord]) -> list[_AuditRecord]:
        """Write each row alone; returns what is left unwritten if the database goes away meanwhile."""
        for n, row in enumerate(batch):
            try:
                await conn.copy_records_to_table("audit_log", records=[row], columns=_AUDIT_COLUMNS)
            except TRANSIENT_ERRORS:
                return batch[n:]
            except Exception as exc:
                self._unwritable.inc()
                log.error("audit record unwritable (%s): %s %s -> %d", type(exc).__name__, row[2], row[3], row[6])
        return []

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("audit flush postponed: %s", type(exc).__name__)


class Authenticator:
    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool | None],
        bootstrap_admin_key: str | None,
        limiter: RateLimiter,
        failures: RateLimiter,
        required: bool = True,
    ) -> None:
        self._pool = pool_getter
        self._bootstrap = hash_key(bootstrap_admin_key) if bootstrap_admin_key else None
        self._limiter = limiter
        # Invalid keys per client address: past its burst, that address gets 429 before any key
        # it sends is looked up, so guessing keys is slow and costs the database nothing.
        self._failures = failures
        self.required = required
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def principal_for(self, key: str) -> Principal | None:
        digest = hash_key(key)
        if self._bootstrap is not None and secrets.compare_digest(digest, self._bootstrap):
            return Principal("bootstrap-admin", "bootstrap admin key", frozenset({"admin"}))
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        pool = self._pool()
        if pool is None:
            return None
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT key_id, name, scopes FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL", digest
            )
        principal = Principal(row["key_id"], row["name"], frozenset(row["scopes"])) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic(), principal)
        return principal

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header[:7].lower() == "bearer " else None
        if not key:
            if not self.required:
                return Principal("anonymous", "authentication disabled", frozenset({"admin"}))
            raise ApiError(401, "unauthenticated", "send an API key: Authorization: Bearer <key>")
        principal = await self.principal_for(key)
        if principal is None:
            # Guessing is limited per client address; valid keys are never held up by it (many
            # clients may share one address behind a proxy or NAT).
            address = request.client.host if request.client else "unknown"
            if wait := self._failures.take(address):
                raise ApiError(
                    429, "too_many_failed_logins", f"too many invalid keys from this address; retry in {wait:.0f} s",
                    headers={"Retry-After": str(max(1, round(wait + 0.5)))},
                )  # fmt: skip
            raise ApiError(401, "unauthenticated", "this API key is not valid (unknown or revoked)")
        wait = self._limiter.take(principal.key_id)
        if wait:
            raise ApiError(
                429, "rate_limited", f"too many requests for this key; retry in {wait:.2f} s",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )  # fmt: skip
        request.state.principal = principal
        return principal


async def current_principal(request: Request) -> Principal:
    authenticator: Authenticator = request.app.state.runtime.auth
    return await authenticator.authenticate(request)


Caller = Annotated[Principal, Depends(current_principal)]


class ScopeCheck:
    """The dependency require() makes. An object, not a closure, so that the OpenAPI document can
    read which scopes a route needs from the route itself (servicekit.apidocs)."""

    def __init__(self, any_of: tuple[str, ...]) -> None:
        self.scopes = any_of

    async def __call__(self, principal: Caller) -> Principal:
        if not any(principal.allows(scope) for scope in self.scopes):
            raise ApiError(
                403,
                "forbidden",
                f"this key may not do this; it needs one of: {', '.join(self.scopes)}",
                required=list(self.scopes),
            )
        return principal


def require(*any_of: str) -> Any:
    """A dependency: the caller's key must have one of these scopes (admin has them all)."""
    return Depends(ScopeCheck(any_of))


def require_channels(principal: Principal, channels: set[str]) -> None:
    """Channel keys may only write their own channel's interactions; agents and admins any."""
    if principal.allows("agent"):
        return
    missing = sorted(c for c in channels if not principal.allows(f"channel:{c}"))
    if missing:
        raise ApiError(
            403,
            "forbidden",
            f"this key may not write interactions of channel {', '.join(missing)}",
            required=[f"channel:{c}" for c in missing],
        )


async def audit_page(
    conn: asyncpg.Connection, key_id: str | None, customer_id: str | None, limit: int, before: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Audit rows newest first, and the cursor of the next page (None on the last one)."""
    rows = await conn.fetch(
        "SELECT id, at, key_id, method, route, customer_id, target, status FROM audit_log"
        " WHERE ($1::text IS NULL OR key_id = $1) AND ($2::text IS NULL OR customer_id = $2)"
        " AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $3",
        key_id,
        customer_id,
        limit,
        before,
    )
    items = [
        {k: v for k, v in r.items() if k != "id"}
        | {"at": r["at"].isoformat(), "target": orjson.loads(r["target"]) if r["target"] else None}
        for r in rows
    ]
    return items, rows[-1]["id"] if len(rows) == limit else None


async def key_listing(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every API key this service knows, newest first (never the key itself)."""
    rows = await conn.fetch(
        "SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at DESC"
    )
    return [
        {
            "key_id": r["key_id"],
            "name": r["name"],
            "scopes": list(r["scopes"]),
            "created_at": r["created_at"].isoformat(),
            "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None,
        }
        for r in rows
    ]
