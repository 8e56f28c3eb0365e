"""analytics' SQL for reports (issue 29): KPIs grouped by team, owner, type, a case field or a
tag; the per-case report in keyset batches; and the writes of the case fields and tags it needs.

A grouped query has the same FROM and WHERE as the totals' query in store.py and only adds a
GROUP BY on the dimension, so each case (or CSAT answer) falls in exactly one row, its value's or
null's. A tag is the exception: a case is in the row of each of its tags (a join), so those rows
do not sum to the totals.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from analytics.store import KpiQuery, empty_cases, empty_csat, pct, rounded

GROUP_KINDS = ("team", "owner", "type", "tag", "field")
FIELD_PREFIX = "field."


@dataclass(frozen=True)
class GroupBy:
    kind: str  # one of GROUP_KINDS
    field: str | None = None  # the field's name, for kind == "field"

    @staticmethod
    def parse(text: str) -> "GroupBy":
        """From the query parameter, already checked against its pattern."""
        if text.startswith(FIELD_PREFIX):
            return GroupBy("field", text.removeprefix(FIELD_PREFIX))
        return GroupBy(text)

    @property
    def sums_to_totals(self) -> bool:
        return self.kind != "tag"

    def dimension(self, case: str, survey: bool = False) -> tuple[str, str]:
        """(SQL expression of the group's value, the join it needs) for rows of `case` (an alias
        of a table with case_id) of kpi_cases (survey False) or kpi_surveys (True)."""
        if self.kind == "tag":
            return "g.tag", f"LEFT JOIN case_tags g ON g.case_id = {case}.case_id"
        if self.kind == "field":
            return "g.value_text", f"LEFT JOIN case_field_values g ON g.case_id = {case}.case_id AND g.name = $8"
        if survey:
            # A survey keeps its case's team and type as they were when it was answered (as the
            # totals filter them); its owner is the case's.
            column = {"team": "s.team", "type": "s.case_type", "owner": "c.owner"}[self.kind]
            return column, ""
        return f"c.{self.kind}", ""


_CASE_FILTER = (
    "($3::text IS NULL OR c.channel = $3) AND ($4::text IS NULL OR c.region = $4)"
    " AND ($5::text IS NULL OR c.type = $5) AND ($6::text IS NULL OR c.priority = $6)"
    " AND ($7::text IS NULL OR c.team = $7)"
)
_SURVEY_FILTER = (
    "($3::text IS NULL OR s.channel = $3) AND ($4::text IS NULL OR s.region = $4)"
    " AND ($5::text IS NULL OR s.case_type = $5) AND ($6::text IS NULL OR s.priority = $6)"
    " AND ($7::text IS NULL OR s.team = $7)"
)
_FR = "extract(epoch FROM c.first_response_at - c.opened_at)"
_TTR = "extract(epoch FROM c.resolved_at - c.opened_at)"
_HANDLE = "extract(epoch FROM c.resolved_at - c.assigned_at)"


def _queries(g: GroupBy) -> tuple[str, str, str]:
    dim, join = g.dimension("c")
    opened = f"""
SELECT {dim} AS g, count(*) AS opened, avg({_FR}) AS fr_mean,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY {_FR}) AS fr_p90
FROM kpi_cases c {join}
WHERE c.opened_at >= $1 AND c.opened_at < $2 AND {_CASE_FILTER}
GROUP BY 1"""
    resolved = f"""
SELECT {dim} AS g, count(*) AS resolved, avg({_TTR}) AS ttr_mean,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY {_TTR}) AS ttr_p90,
       count(*) FILTER (WHERE (c.resolved_at AT TIME ZONE 'UTC')::date = (c.opened_at AT TIME ZONE 'UTC')::date)
           AS same_day,
       count(*) FILTER (WHERE NOT c.reopened AND c.inbound_links <= 1) AS first_contact,
       count(*) FILTER (WHERE NOT c.breached) AS sla_met,
       avg({_HANDLE}) AS handle_mean, percentile_cont(0.9) WITHIN GROUP (ORDER BY {_HANDLE}) AS handle_p90
FROM kpi_cases c {join}
WHERE c.resolved_at >= $1 AND c.resolved_at < $2 AND {_CASE_FILTER}
GROUP BY 1"""
    sdim, sjoin = g.dimension("s", survey=True)
    surveys = f"""
SELECT {sdim} AS g, count(*) AS csat_n, avg(s.score) AS csat_mean,
       count(*) FILTER (WHERE s.score >= 8) AS csat_satisfied
FROM kpi_surveys s LEFT JOIN kpi_cases c ON c.case_id = s.case_id {sjoin}
WHERE s.kind = 'csat' AND s.at >= $1 AND s.at < $2 AND {_SURVEY_FILTER}
GROUP BY 1"""
    return opened, resolved, surveys


def _empty_group(value: str | None) -> dict[str, Any]:
    return {"group": value, "cases": empty_cases(), "cases_handled": 0, "csat": empty_csat()}


async def grouped_kpis(conn: asyncpg.Connection, q: KpiQuery, g: GroupBy) -> list[dict[str, Any]]:
    """One row per value of the dimension (null: none) with the case KPIs and CSAT of store.kpis,
    over the same cases and answers; rows ordered by value, null last."""
    args: list[Any] = [q.start, q.end, q.channel, q.region, q.case_type, q.priority, q.team]
    if g.kind == "field":
        args.append(g.field)
    opened_sql, resolved_sql, surveys_sql = _queries(g)
    groups: dict[str | None, dict[str, Any]] = {}

    def row(value: str | None) -> dict[str, Any]:
        return groups.setdefault(value, _empty_group(value))

    for r in await conn.fetch(opened_sql, *args):
        cases = row(r["g"])["cases"]
        cases["opened"] = r["opened"]
        cases["first_response_seconds"] = {"mean": rounded(r["fr_mean"]), "p90": rounded(r["fr_p90"])}
    for r in await conn.fetch(resolved_sql, *args):
        group = row(r["g"])
        cases = group["cases"]
        cases["resolved"] = group["cases_handled"] = r["resolved"]
        cases["resolution_seconds"] = {"mean": rounded(r["ttr_mean"]), "p90": rounded(r["ttr_p90"])}
        cases["handle_seconds"] = {"mean": rounded(r["handle_mean"]), "p90": rounded(r["handle_p90"])}
        cases["closed_same_day"] = r["same_day"]
        cases["first_contact_resolution_pct"] = pct(r["first_contact"], r["resolved"])
        cases["sla_compliance_pct"] = pct(r["sla_met"], r["resolved"])
    for r in await conn.fetch(surveys_sql, *args):
        row(r["g"])["csat"] = {
            "responses": r["csat_n"],
            "mean": rounded(r["csat_mean"]),
            "satisfied_pct": pct(r["csat_satisfied"], r["csat_n"]),
        }
    return [groups[k] for k in sorted(groups, key=lambda v: (v is None, v or ""))]


async def personal_field(conn: asyncpg.Connection, name: str) -> bool:
    """Whether the case field's latest definition is personal (never reported)."""
    return bool(await conn.fetchval("SELECT personal FROM case_field_definitions WHERE name = $1", name))


# --- the per-case report ----------------------------------------------------------------------

_REPORT_BATCH = """
SELECT c.case_id, c.customer_id, c.type, c.priority, c.status, c.team, c.owner, c.opened_at, c.assigned_at,
       c.first_response_at, c.resolved_at, c.closed_at, c.first_response_breached, c.resolution_breached, c.csat,
       (SELECT array_agg(t.tag ORDER BY t.tag) FROM case_tags t WHERE t.case_id = c.case_id) AS tags,
       (SELECT jsonb_object_agg(f.name, f.value) FROM case_field_values f WHERE f.case_id = c.case_id)::text
           AS fields
FROM kpi_cases c
WHERE c.opened_at >= $1 AND c.opened_at < $2 AND (c.opened_at, c.case_id) > ($3::timestamptz, $4::text)
ORDER BY c.opened_at, c.case_id
LIMIT $5
"""


async def report_batch(
    conn: asyncpg.Connection, start: datetime, end: datetime, after: tuple[datetime, str], limit: int
) -> list[asyncpg.Record]:
    """The next `limit` cases opened in [start, end) after the keyset `after` (opened_at, case_id)."""
    return await conn.fetch(_REPORT_BATCH, start, end, after[0], after[1], limit)


async def report_field_names(conn: asyncpg.Connection) -> list[str]:
    """The report's field columns: every non-personal case field defined or seen, by name."""
    rows = await conn.fetch(
        "SELECT name FROM case_field_definitions WHERE NOT personal"
        " UNION SELECT DISTINCT name FROM case_field_values"
        " WHERE name NOT IN (SELECT name FROM case_field_definitions WHERE personal) ORDER BY 1"
    )
    return [r["name"] for r in rows]


# --- the fold (projections.KpiProjection) ----------------------------------------------------


def value_text(value: Any) -> str:
    """A field value as reports show and group it: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


async def set_case_fields(conn: asyncpg.Connection, case_id: str, values: dict[str, Any]) -> None:
    """Set (or, for None, clear) the case's non-personal field values."""
    cleared = [name for name, v in values.items() if v is None]
    kept = {name: v for name, v in values.items() if v is not None}
    if cleared:
        await conn.execute(
            "DELETE FROM case_field_values WHERE case_id = $1 AND name = ANY($2::text[])", case_id, cleared
        )
    if kept:
        await conn.execute(
            "INSERT INTO case_field_values (case_id, name, value, value_text)"
            " SELECT $1, n, v::jsonb, t FROM unnest($2::text[], $3::text[], $4::text[]) AS x(n, v, t)"
            " ON CONFLICT (case_id, name) DO UPDATE SET value = EXCLUDED.value, value_text = EXCLUDED.value_text",
            case_id,
            list(kept),
            [json.dumps(v) for v in kept.values()],
            [value_text(v) for v in kept.values()],
        )


async def set_case_tags(conn: asyncpg.Connection, case_id: str, tags: Sequence[str]) -> None:
    """The case's tags are now exactly `tags` (each event carries the whole set)."""
    await conn.execute("DELETE FROM case_tags WHERE case_id = $1 AND NOT tag = ANY($2::text[])", case_id, list(tags))
    await conn.execute(
        "INSERT INTO case_tags (case_id, tag) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        case_id,
        list(tags),
    )


async def define_case_field(conn: asyncpg.Connection, definition: dict[str, Any], version: int) -> None:
    """Keep the latest version of a case field's definition (an older one arriving late is ignored)."""
    await conn.execute(
        "INSERT INTO case_field_definitions (name, label, personal, version) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET label = EXCLUDED.label, personal = EXCLUDED.personal,"
        " version = EXCLUDED.version WHERE case_field_definitions.version < EXCLUDED.version",
        definition["name"],
        definition.get("label"),
        bool(definition.get("personal")),
        version,
    )
