"""analytics' campaign SQL: the campaigns notification announced, their fixed audiences, the
decisions and responses attributed to them, and their results.

Writes are ON CONFLICT DO NOTHING: the consumer's dedup record applies each event once, these
keep a replay harmless too.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from analytics.attribution import Interaction, Response, Touch
from analytics.audience import Audience

# audience.matches in SQL: a test checks both select the same customers. Merged customers have
# no row of their own (the fold deletes it), the alias check only guards a row written before.
_AUDIENCE = """
SELECT c.customer_id FROM analytics_customers c
WHERE NOT EXISTS (SELECT 1 FROM erased_customers e WHERE e.customer_id = c.customer_id)
  AND NOT EXISTS (SELECT 1 FROM analytics_aliases a WHERE a.merged_id = c.customer_id)
  AND ($1::text IS NULL OR c.segment = $1)
  AND ($2::text IS NULL OR c.risk_band = $2)
  AND ($3::text IS NULL OR c.region = $3)
  AND ($4::text IS NULL OR EXISTS (
      SELECT 1 FROM customer_channels ch WHERE ch.customer_id = c.customer_id AND ch.channel = $4))
  AND ($5::boolean IS NULL OR c.vip = $5)
  AND ($6::timestamptz IS NULL OR c.last_interaction_at IS NULL OR c.last_interaction_at < $6)
  AND ($7::timestamptz IS NULL OR c.last_interaction_at >= $7)
ORDER BY c.customer_id COLLATE "C"
"""


async def audience_ids(conn: asyncpg.Connection, a: Audience) -> list[str]:
    rows = await conn.fetch(
        _AUDIENCE,
        a.segment,
        a.risk_band,
        a.region,
        a.channel_used,
        a.vip,
        a.last_contact_before,
        a.last_contact_after,
    )
    return [r["customer_id"] for r in rows]


async def add_campaign(
    conn: asyncpg.Connection,
    campaign_id: str,
    name: str,
    audience: dict[str, Any],
    purpose: str,
    send_at: datetime,
    status: str,
    created_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO campaigns (campaign_id, name, audience, purpose, send_at, status, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        campaign_id,
        name,
        audience,
        purpose,
        send_at,
        status,
        created_at,
    )


async def set_status(conn: asyncpg.Connection, campaign_id: str, status: str) -> None:
    await conn.execute(
        "UPDATE campaigns SET status = $2 WHERE campaign_id = $1 AND status <> 'invalid'", campaign_id, status
    )


async def campaign_for_update(conn: asyncpg.Connection, campaign_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM campaigns WHERE campaign_id = $1 FOR UPDATE", campaign_id)


async def campaign(conn: asyncpg.Connection, campaign_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM campaigns WHERE campaign_id = $1", campaign_id)


async def due_campaigns(conn: asyncpg.Connection, now: datetime, limit: int = 100) -> list[str]:
    rows = await conn.fetch(
        "SELECT campaign_id FROM campaigns WHERE resolved_at IS NULL AND send_at <= $1"
        " AND status NOT IN ('cancelled', 'invalid') ORDER BY send_at LIMIT $2",
        now,
        limit,
    )
    return [r["campaign_id"] for r in rows]


async def fix_audience(conn: asyncpg.Connection, campaign_id: str, customer_ids: Sequence[str], at: datetime) -> None:
    await conn.execute(
        "INSERT INTO campaign_audience (campaign_id, customer_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        campaign_id,
        list(customer_ids),
    )
    await conn.execute(
        "UPDATE campaigns SET resolved_at = $2, audience_size = $3 WHERE campaign_id = $1",
        campaign_id,
        at,
        len(customer_ids),
    )


async def known_campaigns(conn: asyncpg.Connection, ids: Sequence[str]) -> set[str]:
    rows = await conn.fetch("SELECT campaign_id FROM campaigns WHERE campaign_id = ANY($1::text[])", list(ids))
    return {r["campaign_id"] for r in rows}


async def add_channels(conn: asyncpg.Connection, pairs: set[tuple[str, str]]) -> None:
    """(customer id, channel) pairs: the channels these customers have used."""
    await conn.execute(
        "INSERT INTO customer_channels (customer_id, channel) SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT DO NOTHING",
        [c for c, _ in pairs],
        [ch for _, ch in pairs],
    )


async def erase(conn: asyncpg.Connection, customer_ids: Sequence[str]) -> None:
    await conn.execute(
        "INSERT INTO erased_customers (customer_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        list(customer_ids),
    )


async def merge(conn: asyncpg.Connection, merged: str, survivor: str) -> None:
    """The merged customer's channels and campaign messages are the survivor's from now on."""
    await conn.execute(
        "INSERT INTO customer_channels (customer_id, channel) SELECT $2, channel FROM customer_channels"
        " WHERE customer_id = $1 ON CONFLICT DO NOTHING",
        merged,
        survivor,
    )
    await conn.execute("DELETE FROM customer_channels WHERE customer_id = $1", merged)
    await conn.execute("UPDATE campaign_decisions SET customer_id = $2 WHERE customer_id = $1", merged, survivor)
    await conn.execute("UPDATE campaign_inbound SET customer_id = $2 WHERE customer_id = $1", merged, survivor)
    await conn.execute("UPDATE campaign_withdrawals SET customer_id = $2 WHERE customer_id = $1", merged, survivor)


async def add_decision(
    conn: asyncpg.Connection, event_id: str, campaign_id: str, customer_id: str, channel: str, status: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO campaign_decisions (event_id, campaign_id, customer_id, channel, status, at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        event_id,
        campaign_id,
        customer_id,
        channel,
        status,
        at,
    )


async def touches(
    conn: asyncpg.Connection, customer_ids: set[str], since: datetime, campaign_ids: set[str] | None = None
) -> list[Touch]:
    """These customers' touches since `since`, and every touch of `campaign_ids` (metadata attribution)."""
    rows = await conn.fetch(
        "SELECT campaign_id, customer_id, channel, at FROM campaign_decisions"
        " WHERE customer_id = ANY($1::text[]) AND status IN ('sent', 'delivered')"
        " AND (at >= $2 OR campaign_id = ANY($3::text[]))",
        list(customer_ids),
        since,
        list(campaign_ids or ()),
    )
    return [Touch(r["campaign_id"], r["customer_id"], r["channel"], r["at"]) for r in rows]


# An inbound interaction kept for late touches: (interaction, its event's time)
Inbound = tuple[Interaction, datetime]


async def add_inbound(conn: asyncpg.Connection, rows: Sequence[Inbound]) -> None:
    await conn.execute(
        "INSERT INTO campaign_inbound (event_id, customer_id, at, event_time, channel, kind, amount, named)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[],"
        " $6::text[], $7::numeric[], $8::text[]) ON CONFLICT DO NOTHING",
        [i.event_id for i, _ in rows],
        [i.customer_id for i, _ in rows],
        [i.at for i, _ in rows],
        [t for _, t in rows],
        [i.channel for i, _ in rows],
        [i.kind for i, _ in rows],
        [i.amount for i, _ in rows],
        [i.campaign_id for i, _ in rows],
    )


async def unattributed_inbound(conn: asyncpg.Connection, customer_ids: set[str], since: datetime) -> list[Inbound]:
    """These customers' kept inbound interactions since `since` that answer no campaign yet."""
    rows = await conn.fetch(
        "SELECT i.* FROM campaign_inbound i WHERE i.customer_id = ANY($1::text[]) AND i.at >= $2"
        " AND NOT EXISTS (SELECT 1 FROM campaign_responses r WHERE r.interaction_event_id = i.event_id)",
        list(customer_ids),
        since,
    )
    return [
        (
            Interaction(
                str(r["event_id"]), r["customer_id"], r["at"], r["channel"], r["kind"], "inbound", r["named"],
                None if r["amount"] is None else float(r["amount"]),
            ),
            r["event_time"],
        )
        for r in rows
    ]  # fmt: skip


async def forget_inbound(conn: asyncpg.Connection, before: datetime) -> None:
    await conn.execute("DELETE FROM campaign_inbound WHERE at < $1", before)
    await conn.execute("DELETE FROM campaign_withdrawals WHERE at < $1", before)


async def add_withdrawal(conn: asyncpg.Connection, event_id: str, customer_id: str, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO campaign_withdrawals (event_id, customer_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        event_id,
        customer_id,
        at,
    )


async def uncounted_withdrawals(
    conn: asyncpg.Connection, customer_ids: set[str], since: datetime
) -> list[tuple[str, str, datetime]]:
    """(event id, customer id, time) of these customers' withdrawals since `since` not yet counted."""
    rows = await conn.fetch(
        "SELECT w.event_id::text AS event_id, w.customer_id, w.at FROM campaign_withdrawals w"
        " WHERE w.customer_id = ANY($1::text[]) AND w.at >= $2"
        " AND NOT EXISTS (SELECT 1 FROM campaign_unsubscribes u WHERE u.event_id = w.event_id)",
        list(customer_ids),
        since,
    )
    return [(r["event_id"], r["customer_id"], r["at"]) for r in rows]


async def add_responses(conn: asyncpg.Connection, responses: Sequence[tuple[Response, datetime]]) -> set[str]:
    """Record the responses; the interaction ids of those not attributed before."""
    rows = await conn.fetch(
        "INSERT INTO campaign_responses (interaction_event_id, campaign_id, customer_id, channel, kind, amount,"
        " attributed_by, at) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::numeric[], $7::text[], $8::timestamptz[]) ON CONFLICT DO NOTHING RETURNING interaction_event_id::text",
        [r.interaction_event_id for r, _ in responses],
        [r.campaign_id for r, _ in responses],
        [r.customer_id for r, _ in responses],
        [r.channel for r, _ in responses],
        [r.kind for r, _ in responses],
        [r.amount for r, _ in responses],
        [r.attributed_by for r, _ in responses],
        [at for _, at in responses],
    )
    return {r["interaction_event_id"] for r in rows}


async def add_unsubscribe(conn: asyncpg.Connection, event_id: str, t: Touch, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO campaign_unsubscribes (event_id, campaign_id, customer_id, channel, at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        event_id,
        t.campaign_id,
        t.customer_id,
        t.channel,
        at,
    )


# --- results (campaign_api, metrics) -----------------------------------------------------------

_DECISIONS = """
SELECT channel, count(DISTINCT customer_id) FILTER (WHERE status = 'sent') AS sent,
       count(DISTINCT customer_id) FILTER (WHERE status = 'delivered') AS delivered
FROM campaign_decisions WHERE campaign_id = $1
GROUP BY GROUPING SETS ((channel), ())
"""
# responded_sent: responders the campaign was sent to, the response rate's numerator (a customer
# who names the campaign without having been sent it responds, but is not in the rate).
_RESPONSES = """
SELECT r.channel, count(DISTINCT r.customer_id) AS responded,
       count(DISTINCT r.customer_id) FILTER (WHERE EXISTS (
           SELECT 1 FROM campaign_decisions d
           WHERE d.campaign_id = $1 AND d.customer_id = r.customer_id AND d.status = 'sent')) AS responded_sent,
       count(*) FILTER (WHERE r.kind = 'purchase') AS conversions,
       coalesce(sum(r.amount) FILTER (WHERE r.kind = 'purchase'), 0) AS revenue
FROM campaign_responses r WHERE r.campaign_id = $1
GROUP BY GROUPING SETS ((r.channel), ())
"""
_UNSUBSCRIBES = """
SELECT channel, count(DISTINCT customer_id) AS unsubscribed
FROM campaign_unsubscribes WHERE campaign_id = $1
GROUP BY GROUPING SETS ((channel), ())
"""


def _blank() -> dict[str, Any]:
    return {"sent": 0, "delivered": 0, "responded": 0, "conversions": 0, "revenue": 0.0, "unsubscribed": 0}


async def results(conn: asyncpg.Connection, campaign_id: str) -> dict[str, Any]:
    """The seeds' campaign metrics: response rate (responders sent it / sent), conversions (attributed
    purchases) and revenue (their metadata.amount), in total and by channel."""
    by: dict[str | None, dict[str, Any]] = {}
    for query, fields in (
        (_DECISIONS, ("sent", "delivered")),
        (_RESPONSES, ("responded", "responded_sent", "conversions", "revenue")),
        (_UNSUBSCRIBES, ("unsubscribed",)),
    ):
        for r in await conn.fetch(query, campaign_id):
            row = by.setdefault(r["channel"], _blank())
            for f in fields:
                row[f] = float(r[f]) if f == "revenue" else int(r[f])
    for row in by.values():
        row["revenue"] = round(row["revenue"], 2)
        responded_sent = row.pop("responded_sent", 0)
        row["response_rate"] = round(responded_sent / row["sent"], 4) if row["sent"] else None
    totals = by.pop(None, None) or {**_blank(), "response_rate": None}
    return {**totals, "by_channel": {ch: by[ch] for ch in sorted(c for c in by if c is not None)}}


async def active_campaigns(conn: asyncpg.Connection, since: datetime, limit: int) -> list[str]:
    """Campaigns still sending or within their attribution window: the labels of the gauges."""
    rows = await conn.fetch(
        "SELECT campaign_id FROM campaigns WHERE status NOT IN ('invalid')"
        " AND (status IN ('scheduled', 'sending', 'paused') OR send_at >= $1)"
        " ORDER BY send_at DESC LIMIT $2",
        since,
        limit,
    )
    return [r["campaign_id"] for r in rows]
