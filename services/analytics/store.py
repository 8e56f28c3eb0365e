"""SQL for analytics' read side: KPIs over time windows, and one customer's insights.

Each KPI query groups by GROUPING SETS ((bucket), ()), so one statement gives the series and
the totals. Windows follow the UTC hour or day; "same day" is the same UTC date.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class KpiQuery:
    start: datetime
    end: datetime
    window: str  # hour | day
    channel: str | None = None
    region: str | None = None
    case_type: str | None = None
    priority: str | None = None


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
       count(*) FILTER (WHERE NOT breached) AS sla_met
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
GROUP BY GROUPING SETS ((date_trunc($3, at)), ())
"""

_NOTIFICATIONS = """
SELECT date_trunc($3, at) AS b, status, count(*) AS n
FROM kpi_notification_events
WHERE at >= $1 AND at < $2 AND ($4::text IS NULL OR channel = $4) AND ($5::text IS NULL OR region = $5)
GROUP BY GROUPING SETS ((date_trunc($3, at), status), (status))
"""


NOTIFICATION_STATUSES = ("scheduled", "sent", "delivered", "failed", "suppressed")


def _pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def _round(x: Any) -> float | None:
    return None if x is None else round(float(x), 3)


def _empty() -> dict[str, Any]:
    return {
        "interactions": {"volume": 0, "inbound": 0, "complaints": 0},
        "cases": {
            "opened": 0,
            "first_response_seconds": {"mean": None, "p90": None},
            "resolved": 0,
            "resolution_seconds": {"mean": None, "p90": None},
            "closed_same_day": 0,
            "first_contact_resolution_pct": None,
            "sla_compliance_pct": None,
        },
        "csat": {"responses": 0, "mean": None, "satisfied_pct": None},
        "nps": {"responses": 0, "score": None},
        "notifications": {
            "scheduled": 0, "sent": 0, "delivered": 0, "failed": 0, "suppressed": 0,
            "delivery_rate_pct": None, "suppression_rate_pct": None,
        },
    }  # fmt: skip


async def kpis(conn: asyncpg.Connection, q: KpiQuery) -> dict[str, Any]:
    args = (q.start, q.end, q.window, q.channel, q.region)
    case_args = (*args, q.case_type, q.priority)
    buckets: dict[datetime | None, dict[str, Any]] = {}

    def at(b: datetime | None) -> dict[str, Any]:
        return buckets.setdefault(b, _empty())

    if q.case_type is None and q.priority is None:  # interactions have no case type or priority
        for r in await conn.fetch(_INTERACTIONS, *args):
            at(r["b"])["interactions"] = {"volume": r["volume"], "inbound": r["inbound"], "complaints": r["complaints"]}
    for r in await conn.fetch(_OPENED, *case_args):
        cases = at(r["b"])["cases"]
        cases["opened"] = r["opened"]
        cases["first_response_seconds"] = {"mean": _round(r["fr_mean"]), "p90": _round(r["fr_p90"])}
    for r in await conn.fetch(_RESOLVED, *case_args):
        cases = at(r["b"])["cases"]
        cases["resolved"] = r["resolved"]
        cases["resolution_seconds"] = {"mean": _round(r["ttr_mean"]), "p90": _round(r["ttr_p90"])}
        cases["closed_same_day"] = r["same_day"]
        cases["first_contact_resolution_pct"] = _pct(r["first_contact"], r["resolved"])
        cases["sla_compliance_pct"] = _pct(r["sla_met"], r["resolved"])
    for r in await conn.fetch(_SURVEYS, *case_args):
        bucket = at(r["b"])
        bucket["csat"] = {
            "responses": r["csat_n"],
            "mean": _round(r["csat_mean"]),
            "satisfied_pct": _pct(r["csat_satisfied"], r["csat_n"]),
        }
        nps = None if not r["nps_n"] else round(100.0 * (r["promoters"] - r["detractors"]) / r["nps_n"], 2)
        bucket["nps"] = {"responses": r["nps_n"], "score": nps}
    if q.case_type is None and q.priority is None:  # notifications have a channel and region only
        for r in await conn.fetch(_NOTIFICATIONS, *args):
            if r["status"] in NOTIFICATION_STATUSES:  # not "retried": a try failed, the message did not
                at(r["b"])["notifications"][r["status"]] = r["n"]
        for bucket in buckets.values():
            n = bucket["notifications"]
            # Sent is the channel accepting the message; delivered (a receipt) exists for webhooks
            # only, so it is counted but does not enter the rate (see docs/services/analytics.md).
            n["delivery_rate_pct"] = _pct(n["sent"], n["sent"] + n["failed"])
            n["suppression_rate_pct"] = _pct(n["suppressed"], n["scheduled"] + n["suppressed"])
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
