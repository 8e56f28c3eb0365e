"""SQL for campaigns: the campaigns, their targets and their messages' counts."""

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from eventkit.envelope import format_time

_COLUMNS = (
    "campaign_id, name, request, audience, purpose, templates, send_at, created_by, status, reason,"
    " audience_size, parts, parts_seen, created_at, updated_at"
)


async def insert(conn: asyncpg.Connection, c: dict[str, Any]) -> bool:
    """False when the id is taken (the caller compares the request)."""
    inserted = await conn.fetchval(
        f"INSERT INTO campaigns ({_COLUMNS}) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6::jsonb, $7, $8, $9,"
        " NULL, NULL, NULL, '{}', $10, $10) ON CONFLICT DO NOTHING RETURNING true",
        c["campaign_id"],
        c["name"],
        c["request"],
        c["audience"],
        c["purpose"],
        c["templates"],
        c["send_at"],
        c["created_by"],
        c["status"],
        c["created_at"],
    )
    return bool(inserted)


async def get(conn: asyncpg.Connection, campaign_id: str, lock: bool = False) -> dict[str, Any] | None:
    """The campaign; lock=True holds it FOR UPDATE (status changes), which waits for a batch in
    flight (batches hold it FOR SHARE): pause and cancel take effect between batches."""
    suffix = " FOR UPDATE" if lock else ""
    r = await conn.fetchrow(f"SELECT {_COLUMNS} FROM campaigns WHERE campaign_id = $1{suffix}", campaign_id)
    return dict(r) if r else None


@dataclass(frozen=True)
class Cursor:
    """Keyset position: (created_at, campaign_id) of the last campaign of the previous page."""

    created_at: datetime
    campaign_id: str

    def encode(self) -> str:
        raw = f"{format_time(self.created_at)}|{self.campaign_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            at, campaign_id = raw.split("|", 1)
            return cls(datetime.fromisoformat(at), campaign_id)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError("not a campaigns cursor") from exc


async def listing(
    conn: asyncpg.Connection, limit: int, before: Cursor | None
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Newest first; the cursor of the next page (None on the last one)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM campaigns WHERE $1::timestamptz IS NULL OR (created_at, campaign_id) < ($1, $2)"
        " ORDER BY created_at DESC, campaign_id DESC LIMIT $3",
        before.created_at if before else None,
        before.campaign_id if before else "",
        limit + 1,
    )
    page = [dict(r) for r in rows[:limit]]
    more = len(rows) > limit
    return page, Cursor(page[-1]["created_at"], page[-1]["campaign_id"]) if more else None


async def set_status(conn: asyncpg.Connection, campaign_id: str, status: str, reason: str | None, at: datetime) -> None:
    await conn.execute(
        "UPDATE campaigns SET status = $2, reason = $3, updated_at = $4 WHERE campaign_id = $1",
        campaign_id,
        status,
        reason,
        at,
    )


async def record_part(
    conn: asyncpg.Connection, campaign_id: str, part: int, parts: int, audience_size: int, at: datetime
) -> bool:
    """False when this part was recorded before (a redelivery or a second resolution)."""
    done = await conn.fetchval(
        "UPDATE campaigns SET parts_seen = array_append(parts_seen, $2), parts = $3, audience_size = $4,"
        " updated_at = $5 WHERE campaign_id = $1 AND NOT ($2 = ANY(parts_seen)) RETURNING true",
        campaign_id,
        part,
        parts,
        audience_size,
        at,
    )
    return bool(done)


async def add_targets(conn: asyncpg.Connection, campaign_id: str, customer_ids: Sequence[str]) -> None:
    await conn.execute(
        "INSERT INTO campaign_targets (campaign_id, customer_id)"
        " SELECT $1, c FROM unnest($2::text[]) AS c ON CONFLICT DO NOTHING",
        campaign_id,
        list(customer_ids),
    )


async def sending_campaign(conn: asyncpg.Connection, now: datetime) -> dict[str, Any] | None:
    """The oldest campaign that is sending and due, with targets left, held FOR SHARE (a status
    change waits for the batch); one another instance holds for an update is skipped."""
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM campaigns c WHERE status = 'sending' AND send_at <= $1 AND EXISTS"
        " (SELECT 1 FROM campaign_targets t WHERE t.campaign_id = c.campaign_id AND t.state = 'pending')"
        " ORDER BY created_at LIMIT 1 FOR SHARE SKIP LOCKED",
        now,
    )
    return dict(r) if r else None


async def take_targets(conn: asyncpg.Connection, campaign_id: str, limit: int) -> list[str]:
    """Pending targets, locked for this batch (another instance's batch skips them)."""
    rows = await conn.fetch(
        "SELECT customer_id FROM campaign_targets WHERE campaign_id = $1 AND state = 'pending'"
        " ORDER BY customer_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        campaign_id,
        limit,
    )
    return [r["customer_id"] for r in rows]


async def mark_decided(conn: asyncpg.Connection, campaign_id: str, customer_ids: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE campaign_targets SET state = 'decided' WHERE campaign_id = $1 AND customer_id = ANY($2::text[])",
        campaign_id,
        list(customer_ids),
    )


async def pending(conn: asyncpg.Connection, campaign_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM campaign_targets WHERE campaign_id = $1 AND state = 'pending'", campaign_id
    )
    return count


async def message_counts(conn: asyncpg.Connection, campaign_id: str) -> list[tuple[str, str | None, int]]:
    rows = await conn.fetch(
        "SELECT status, CASE WHEN status = 'suppressed' THEN reason END AS reason, count(*) AS n"
        " FROM notifications WHERE campaign_id = $1 GROUP BY 1, 2",
        campaign_id,
    )
    return [(r["status"], r["reason"], r["n"]) for r in rows]
