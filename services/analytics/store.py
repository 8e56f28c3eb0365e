"""analytics' SQL: the read side (KPIs over time windows, one customer's insights, the gauges'
counts) and the writes of the KPI fold (projections.KpiProjection).

Each KPI query groups by GROUPING SETS ((bucket), ()), so one statement gives the series and
the totals. Windows follow the UTC hour or day; "same day" is the same UTC date.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson


@dataclass(frozen=True)
class KpiQuery:
    start: datetime
    end: datetime
    window: str  # hour | day
    channel: str | None = None
    region: str | None = None
    case_type: str | None = None
    priority: str | None = None
    team: str | None = None  # case KPIs and surveys only: interactions and notifications have no team


_INTERACTIONS = """
SELECT date_trunc($3, bucket) AS b, coalesce(sum(count), 0)::bigint AS volume,
       coalesce(sum(count) FILTER (WHERE kind = 'complaint'), 0)::bigint AS complaints,
       coalesce(sum(count) FILTER (WHERE direction = 'inbound'), 0)::bigint AS inbound
FROM kpi_interactions
WHERE bucket >= $1 AND bucket < $2 AND ($4::text IS NULL OR channel = $4) AND ($5::text IS NULL OR region = $5)
GROUP BY GROUPING SETS ((date_trunc($3, bucket)), ())
"""

_CASE_FILTER = (
    "($4::text IS NULL OR channel = $4) AND ($5::text IS NULL OR region = $5)"
    " AND ($6::text IS NULL OR type = $6) AND ($7::text IS NULL OR priority = $7)"
    " AND ($8::text IS NULL OR team = $8)"
)

_OPENED = f"""
SELECT date_trunc($3, opened_at) AS b, count(*) AS opened,
       count(first_response_at) AS responded,
       avg(extract(epoch FROM first_response_at - opened_at)) AS fr_mean,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM first_response_at - opened_at)) AS fr_p90
FROM kpi_cases
WHERE opened_at >= $1 AND opened_at < $2 AND {_CASE_FILTER}
GROUP BY GROUPING SETS ((date_trunc($3, opened_at)), ())
"""

_RESOLVED = f"""
SELECT date_trunc($3, resolved_at) AS b, count(*) AS resolved,
       avg(extract(epoch FROM resolved_at - opened_at)) AS ttr_mean,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - opened_at)) AS ttr_p90,
       count(*) FILTER (WHERE (resolved_at AT TIME ZONE 'UTC')::date = (opened_at AT TIME ZONE 'UTC')::date)
           AS same_day,
       count(*) FILTER (WHERE NOT reopened AND inbound_links <= 1) AS first_contact,
       count(*) FILTER (WHERE NOT breached) AS sla_met,
       avg(extract(epoch FROM resolved_at - assigned_at)) AS handle_mean,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - assigned_at)) AS handle_p90
FROM kpi_cases
WHERE resolved_at >= $1 AND resolved_at < $2 AND {_CASE_FILTER}
GROUP BY GROUPING SETS ((date_trunc($3, resolved_at)), ())
"""

_SURVEYS = """
SELECT date_trunc($3, at) AS b,
       count(*) FILTER (WHERE kind = 'csat') AS csat_n,
       avg(score) FILTER (WHERE kind = 'csat') AS csat_mean,
       count(*) FILTER (WHERE kind = 'csat' AND score >= 8) AS csat_satisfied,
       count(*) FILTER (WHERE kind = 'nps') AS nps_n,
       count(*) FILTER (WHERE kind = 'nps' AND score >= 9) AS promoters,
       count(*) FILTER (WHERE kind = 'nps' AND score <= 6) AS detractors
FROM kpi_surveys
WHERE at >= $1 AND at < $2 AND ($4::text IS NULL OR channel = $4) AND ($5::text IS NULL OR region = $5)
  AND ($6::text IS NULL OR case_type = $6) AND ($7::text IS NULL OR priority = $7)
  AND ($8::text IS NULL OR team = $8)
GROUP BY GROUPING SETS ((date_trunc($3, at)), ())
"""

_NOTIFICATIONS = """
SELECT date_trunc($3, at) AS b, status, count(*) AS n
FROM kpi_notification_events
WHERE at >= $1 AND at < $2 AND ($4::text IS NULL OR channel = $4) AND ($5::text IS NULL OR region = $5)
GROUP BY GROUPING SETS ((date_trunc($3, at), status), (status))
"""


NOTIFICATION_STATUSES = ("scheduled", "sent", "delivered", "failed", "suppressed")


def pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def rounded(x: Any) -> float | None:
    return None if x is None else round(float(x), 3)


def empty_cases() -> dict[str, Any]:
    """The case KPIs of a bucket or group without cases (totals and report groups alike)."""
    return {
        "opened": 0,
        "first_response_seconds": {"mean": None, "p90": None},
        "resolved": 0,
        "resolution_seconds": {"mean": None, "p90": None},
        "handle_seconds": {"mean": None, "p90": None},
        "closed_same_day": 0,
        "first_contact_resolution_pct": None,
        "sla_compliance_pct": None,
    }


def empty_csat() -> dict[str, Any]:
    return {"responses": 0, "mean": None, "satisfied_pct": None}


def _empty() -> dict[str, Any]:
    return {
        "interactions": {"volume": 0, "inbound": 0, "complaints": 0},
        "cases": empty_cases(),
        "csat": empty_csat(),
        "nps": {"responses": 0, "score": None},
        "notifications": {
            "scheduled": 0, "sent": 0, "delivered": 0, "failed": 0, "suppressed": 0,
            "delivery_rate_pct": None, "suppression_rate_pct": None,
        },
    }  # fmt: skip


async def kpis(conn: asyncpg.Connection, q: KpiQuery) -> dict[str, Any]:
    args = (q.start, q.end, q.window, q.channel, q.region)
    case_args = (*args, q.case_type, q.priority, q.team)
    per_case = q.case_type is not None or q.priority is not None or q.team is not None
    buckets: dict[datetime | None, dict[str, Any]] = {}

    def at(b: datetime | None) -> dict[str, Any]:
        return buckets.setdefault(b, _empty())

    if not per_case:  # interactions have no case type, priority or team
        for r in await conn.fetch(_INTERACTIONS, *args):
            at(r["b"])["interactions"] = {"volume": r["volume"], "inbound": r["inbound"], "complaints": r["complaints"]}
    for r in await conn.fetch(_OPENED, *case_args):
        cases = at(r["b"])["cases"]
        cases["opened"] = r["opened"]
        cases["first_response_seconds"] = {"mean": rounded(r["fr_mean"]), "p90": rounded(r["fr_p90"])}
    for r in await conn.fetch(_RESOLVED, *case_args):
        cases = at(r["b"])["cases"]
        cases["resolved"] = r["resolved"]
        cases["resolution_seconds"] = {"mean": rounded(r["ttr_mean"]), "p90": rounded(r["ttr_p90"])}
        cases["handle_seconds"] = {"mean": rounded(r["handle_mean"]), "p90": rounded(r["handle_p90"])}
        cases["closed_same_day"] = r["same_day"]
        cases["first_contact_resolution_pct"] = pct(r["first_contact"], r["resolved"])
        cases["sla_compliance_pct"] = pct(r["sla_met"], r["resolved"])
    for r in await conn.fetch(_SURVEYS, *case_args):
        bucket = at(r["b"])
        bucket["csat"] = {
            "responses": r["csat_n"],
            "mean": rounded(r["csat_mean"]),
            "satisfied_pct": pct(r["csat_satisfied"], r["csat_n"]),
        }
        nps = None if not r["nps_n"] else round(100.0 * (r["promoters"] - r["detractors"]) / r["nps_n"], 2)
        bucket["nps"] = {"responses": r["nps_n"], "score": nps}
    if not per_case:  # notifications have a channel and region only
        for r in await conn.fetch(_NOTIFICATIONS, *args):
            if r["status"] in NOTIFICATION_STATUSES:  # not "retried": a try failed, the message did not
                at(r["b"])["notifications"][r["status"]] = r["n"]
        for bucket in buckets.values():
            n = bucket["notifications"]
            # Sent is the channel accepting the message; delivered (a receipt) exists for webhooks
            # only, so it is counted but does not enter the rate (see docs/services/analytics.md).
            n["delivery_rate_pct"] = pct(n["sent"], n["sent"] + n["failed"])
            n["suppression_rate_pct"] = pct(n["suppressed"], n["scheduled"] + n["suppressed"])
    totals = buckets.pop(None, _empty())
    series = [{"start": b.isoformat(), **buckets[b]} for b in sorted(b for b in buckets if b is not None)]
    return {"totals": totals, "series": series}


async def survivor_of(conn: asyncpg.Connection, customer_id: str) -> str | None:
    result: str | None = await conn.fetchval(
        "SELECT survivor_id FROM analytics_aliases WHERE merged_id = $1", customer_id
    )
    return result


async def insights(conn: asyncpg.Connection, customer_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM analytics_customers WHERE customer_id = $1", customer_id)


async def interactions_by_channel(conn: asyncpg.Connection, since: datetime) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT channel, sum(count)::bigint AS n FROM kpi_interactions WHERE bucket >= $1 GROUP BY channel", since
    )
    return {r["channel"]: r["n"] for r in rows}


# --- the KPI fold (projections.KpiProjection) -------------------------------------------------
# Everything is written ON CONFLICT DO NOTHING or as a counter merge: the consumer's dedup record
# keeps each event to one application, these keep a replay of the fold harmless too.

# Interaction counters: (hour, channel, region, kind, direction) -> count
Counts = dict[tuple[datetime, str, str, str, str], int]
# An NPS answer: (event_id, customer_id, score, at, channel, region)
NpsAnswer = tuple[str, str, int, datetime, str, str]
# A notification event: (event_id, customer_id, at, channel, region, status)
NotificationRow = tuple[str, str, datetime, str, str, str]


async def aliases(conn: asyncpg.Connection, ids: set[str]) -> dict[str, str]:
    """merged id -> survivor id, for those of these ids that were merged."""
    rows = await conn.fetch(
        "SELECT merged_id, survivor_id FROM analytics_aliases WHERE merged_id = ANY($1::text[])", list(ids)
    )
    return {r["merged_id"]: r["survivor_id"] for r in rows}


async def merge_alias(conn: asyncpg.Connection, merged: str, survivor: str) -> None:
    """merged now answers as survivor, and so do the ids merged into it before."""
    await conn.execute("UPDATE analytics_aliases SET survivor_id = $1 WHERE survivor_id = $2", survivor, merged)
    await conn.execute(
        "INSERT INTO analytics_aliases (merged_id, survivor_id, parent_id) VALUES ($1, $2, $2)"
        " ON CONFLICT (merged_id) DO UPDATE SET survivor_id = EXCLUDED.survivor_id, parent_id = EXCLUDED.parent_id",
        merged,
        survivor,
    )


async def customers(conn: asyncpg.Connection, ids: set[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM analytics_customers WHERE customer_id = ANY($1::text[])", list(ids))


async def customers_of(conn: asyncpg.Connection, subjects: set[str]) -> list[asyncpg.Record]:
    """For each subject: `subject`, its survivor (`survivor_id`, NULL unless it was merged) and the
    columns of the customer it answers as (all NULL when analytics has none): the aliases and the
    customers of a batch in one round trip."""
    return await conn.fetch(
        "SELECT s.subject, a.survivor_id, c.* FROM unnest($1::text[]) AS s(subject)"
        " LEFT JOIN analytics_aliases a ON a.merged_id = s.subject"
        " LEFT JOIN analytics_customers c ON c.customer_id = coalesce(a.survivor_id, s.subject)",
        list(subjects),
    )


async def delete_customer(conn: asyncpg.Connection, customer_id: str) -> None:
    await conn.execute("DELETE FROM analytics_customers WHERE customer_id = $1", customer_id)


async def write_customers(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Upsert customers, each row in the column order of the INSERT below.

    One statement for the batch, column by column: a statement per row was one of the fold's
    largest costs (BENCHMARKS.md). unnest cannot take complaint_times, itself an array, nor a
    jsonb codec's values: those go as text and are cast."""
    if not rows:
        return
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    columns[9] = ["{" + ",".join(f'"{t.isoformat()}"' for t in times) + "}" for times in columns[9]]
    columns[15] = [orjson.dumps(reasons).decode() for reasons in columns[15]]
    await conn.execute(
        "INSERT INTO analytics_customers (customer_id, first_seen, region, vip, last_interaction_at,"
        " interactions, purchases, purchase_value, complaints, complaint_times, sla_breaches, open_cases,"
        " last_csat, risk_score, risk_band, risk_reasons, segment, as_of)"
        " SELECT c, fs, rg, vip, li, n, pu, pv, co, ct::timestamptz[], sb, oc, cs, rs, rb, rr::jsonb, sg, ao"
        " FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bool[], $5::timestamptz[], $6::int[],"
        " $7::int[], $8::numeric[], $9::int[], $10::text[], $11::int[], $12::int[], $13::int[], $14::int[],"
        " $15::text[], $16::text[], $17::text[], $18::timestamptz[])"
        " AS x(c, fs, rg, vip, li, n, pu, pv, co, ct, sb, oc, cs, rs, rb, rr, sg, ao)"
        " ON CONFLICT (customer_id) DO UPDATE SET first_seen = EXCLUDED.first_seen, region = EXCLUDED.region,"
        " vip = EXCLUDED.vip, last_interaction_at = EXCLUDED.last_interaction_at,"
        " interactions = EXCLUDED.interactions, purchases = EXCLUDED.purchases,"
        " purchase_value = EXCLUDED.purchase_value, complaints = EXCLUDED.complaints,"
        " complaint_times = EXCLUDED.complaint_times, sla_breaches = EXCLUDED.sla_breaches,"
        " open_cases = EXCLUDED.open_cases, last_csat = EXCLUDED.last_csat, risk_score = EXCLUDED.risk_score,"
        " risk_band = EXCLUDED.risk_band, risk_reasons = EXCLUDED.risk_reasons, segment = EXCLUDED.segment,"
        " as_of = EXCLUDED.as_of",
        *columns,
    )


async def add_interactions(conn: asyncpg.Connection, counts: Counts, channels: dict[str, str]) -> None:
    """Add to the interaction counters; remember each interaction's channel (event id -> channel)
    and complete the cases opened by one of them before it arrived."""
    if counts:
        keys = list(counts)
        await conn.execute(
            "INSERT INTO kpi_interactions (bucket, channel, region, kind, direction, count)"
            " SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])"
            " ON CONFLICT (bucket, channel, region, kind, direction)"
            " DO UPDATE SET count = kpi_interactions.count + EXCLUDED.count",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            [k[4] for k in keys],
            [counts[k] for k in keys],
        )
    if channels:
        # One statement, not two: a round trip less on every batch with interactions.
        await conn.execute(
            "WITH x AS (SELECT * FROM unnest($1::text[], $2::text[]) AS x(id, channel)),"
            " kept AS (INSERT INTO interaction_channels (event_id, channel) SELECT id::uuid, channel FROM x"
            " ON CONFLICT DO NOTHING)"
            " UPDATE kpi_cases c SET channel = x.channel FROM x WHERE c.opened_by = x.id AND c.channel = 'unknown'",
            list(channels),
            list(channels.values()),
        )


async def interaction_channel(conn: asyncpg.Connection, event_id: str) -> str | None:
    channel: str | None = await conn.fetchval("SELECT channel FROM interaction_channels WHERE event_id = $1", event_id)
    return channel


async def complete_region(conn: asyncpg.Connection, customer_id: str, region: str) -> None:
    """Cases, surveys and notifications that arrived before the customer's region get it now."""
    for table in ("kpi_cases", "kpi_surveys", "kpi_notification_events"):
        await conn.execute(
            f"UPDATE {table} SET region = $2 WHERE customer_id = $1 AND region = 'unknown'", customer_id, region
        )


async def add_notifications(conn: asyncpg.Connection, rows: Sequence[NotificationRow]) -> None:
    await conn.executemany(
        "INSERT INTO kpi_notification_events (event_id, customer_id, at, channel, region, status)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        rows,
    )


async def add_nps(conn: asyncpg.Connection, answers: Sequence[NpsAnswer]) -> None:
    await conn.executemany(
        "INSERT INTO kpi_surveys (event_id, customer_id, kind, score, at, channel, region)"
        " VALUES ($1, $2, 'nps', $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        answers,
    )


@dataclass(frozen=True)
class OpenedCase:
    case_id: str
    customer_id: str
    type: str
    priority: str
    channel: str
    region: str
    status: str
    opened_at: datetime
    opened_by: str | None  # the interaction that opened it; None: an agent did
    team: str


async def open_case(conn: asyncpg.Connection, c: OpenedCase) -> None:
    await conn.execute(
        "INSERT INTO kpi_cases (case_id, customer_id, type, priority, channel, region, status, opened_at,"
        " opened_by, inbound_links, team) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT DO NOTHING",
        c.case_id,
        c.customer_id,
        c.type,
        c.priority,
        c.channel,
        c.region,
        c.status,
        c.opened_at,
        c.opened_by,
        1 if c.opened_by else 0,
        c.team,
    )


async def assign_case(conn: asyncpg.Connection, case_id: str, team: str, owner: str, at: datetime) -> None:
    """The case's team and owner are its last assignment's; handle time runs from the first one."""
    await conn.execute(
        "UPDATE kpi_cases SET team = $2, owner = $3, assigned_at = coalesce(assigned_at, $4) WHERE case_id = $1",
        case_id,
        team,
        owner,
        at,
    )


async def unassign_case(conn: asyncpg.Connection, case_id: str) -> None:
    await conn.execute("UPDATE kpi_cases SET owner = NULL WHERE case_id = $1", case_id)


async def escalate_case(conn: asyncpg.Connection, case_id: str, team: str) -> None:
    """An escalation moves the case to a team's queue, as the case service's state does."""
    await conn.execute("UPDATE kpi_cases SET team = $2 WHERE case_id = $1", case_id, team)


async def change_case_status(conn: asyncpg.Connection, case_id: str, to: str, frm: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE kpi_cases SET status = $2,"
        " first_response_at = CASE WHEN $3 = 'new' AND first_response_at IS NULL THEN $4"
        " ELSE first_response_at END,"
        # A reopened case is not resolved until it is resolved again (then at that time).
        " resolved_at = CASE WHEN $2 = 'resolved' THEN $4 WHEN $3 = 'resolved' AND $2 = 'open' THEN NULL"
        " ELSE resolved_at END,"
        " reopened = reopened OR ($3 = 'resolved' AND $2 = 'open'),"
        " closed_at = CASE WHEN $2 = 'closed' THEN $4 WHEN $3 = 'closed' THEN NULL ELSE closed_at END"
        " WHERE case_id = $1",
        case_id,
        to,
        frm,
        at,
    )


async def change_case_priority(conn: asyncpg.Connection, case_id: str, priority: str) -> None:
    await conn.execute("UPDATE kpi_cases SET priority = $2 WHERE case_id = $1", case_id, priority)


async def mark_case_breached(conn: asyncpg.Connection, case_id: str, target: str) -> None:
    await conn.execute(
        "UPDATE kpi_cases SET breached = true,"
        " first_response_breached = first_response_breached OR $2 = 'first_response',"
        " resolution_breached = resolution_breached OR $2 = 'resolution' WHERE case_id = $1",
        case_id,
        target,
    )


async def case_responded(conn: asyncpg.Connection, case_id: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE kpi_cases SET first_response_at = least(first_response_at, $2) WHERE case_id = $1", case_id, at
    )


async def add_inbound_link(conn: asyncpg.Connection, case_id: str) -> None:
    await conn.execute("UPDATE kpi_cases SET inbound_links = inbound_links + 1 WHERE case_id = $1", case_id)


async def case_dimensions(conn: asyncpg.Connection, case_id: str) -> asyncpg.Record | None:
    """The case's type, priority, channel, region and team, which its surveys are counted under."""
    return await conn.fetchrow(
        "SELECT type, priority, channel, region, team FROM kpi_cases WHERE case_id = $1", case_id
    )


async def add_csat(
    conn: asyncpg.Connection,
    event_id: str,
    case_id: str,
    customer_id: str,
    score: int,
    at: datetime,
    channel: str,
    region: str,
    case_type: str | None,
    priority: str | None,
    team: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO kpi_surveys (event_id, customer_id, kind, score, at, channel, region, case_type, priority, team,"
        " case_id) VALUES ($1, $2, 'csat', $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        event_id,
        customer_id,
        score,
        at,
        channel,
        region,
        case_type,
        priority,
        team,
        case_id,
    )
    await conn.execute("UPDATE kpi_cases SET csat = $2 WHERE case_id = $1", case_id, score)
