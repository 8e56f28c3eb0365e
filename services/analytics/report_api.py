"""analytics' report routes (issue 29): the per-case CSV and the grouped KPIs as CSV.

The case report streams: it reads the range in keyset batches of REPORT_BATCH cases (opened_at,
case_id), each on a pooled connection held for that batch only, and writes each batch out before
reading the next, so neither the range nor a slow reader holds memory or a connection.
"""

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from servicekit.auth import require
from servicekit.inputs import Rfc3339

from analytics import report_store, store
from analytics.api import GROUP_BY_PATTERN, MAX_RANGE, check_range, check_single, grouped
from analytics.deps import AnalyticsRuntime
from contracts.case import CaseType, Priority
from contracts.events import Channel

router = APIRouter()
MAX_REPORT_RANGE = timedelta(days=366)
REPORT_BATCH = 500
# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CASE_COLUMNS = (
    "case_id", "customer_id", "type", "priority", "status", "team", "owner", "opened_at", "first_assigned_at",
    "first_response_at", "resolved_at", "closed_at", "first_response_seconds", "resolution_seconds", "sla_met",
    "csat", "tags",
)  # fmt: skip
KPI_COLUMNS = (
    "row", "group", "opened", "resolved", "cases_handled", "closed_same_day", "first_response_mean_seconds",
    "first_response_p90_seconds", "resolution_mean_seconds", "resolution_p90_seconds", "handle_mean_seconds",
    "handle_p90_seconds", "first_contact_resolution_pct", "sla_compliance_pct", "csat_responses", "csat_mean",
    "csat_satisfied_pct",
)  # fmt: skip
CSV_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "CSV (RFC 4180), one header line; Content-Disposition names it"},
    422: {"description": "validation_failed (range, parameters), personal_field, too_many_groups"},
}


def cell(value: Any) -> str:
    """One CSV cell: empty for None, true/false, and text that cannot run as a spreadsheet formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, float):
        text = repr(round(value, 3))
    else:
        text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_lines(rows: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # QUOTE_MINIMAL: commas, quotes, line breaks
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return out.getvalue()


def _seconds(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else (later - earlier).total_seconds()


def case_row(r: Any, field_names: list[str]) -> list[Any]:
    done = r["status"] in ("resolved", "closed")
    fields = json.loads(r["fields"]) if r["fields"] else {}
    return [
        r["case_id"], r["customer_id"], r["type"], r["priority"], r["status"], r["team"], r["owner"],
        r["opened_at"], r["assigned_at"], r["first_response_at"], r["resolved_at"], r["closed_at"],
        _seconds(r["first_response_at"], r["opened_at"]), _seconds(r["resolved_at"], r["opened_at"]),
        # Met: neither the first-response nor the resolution target breached; known once done.
        (not (r["first_response_breached"] or r["resolution_breached"])) if done else None,
        r["csat"], ";".join(r["tags"] or ()),
        *(report_store.value_text(fields[n]) if n in fields else None for n in field_names),
    ]  # fmt: skip


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}


def _stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ") if t.utcoffset() == timedelta(0) else t.strftime("%Y%m%dT%H%M%S%z")


@router.get(
    "/v1/reports/cases.csv",
    operation_id="getCaseReportCsv",
    tags=["analytics"],
    dependencies=[require("ops")],
    summary="One CSV row per case opened in [from, to), with its moments, SLA, CSAT, tags and fields",
    response_class=StreamingResponse,
    responses=CSV_ERRORS,
)
async def get_case_report(
    rt: AnalyticsRuntime,
    from_: Annotated[Rfc3339, Query(alias="from", description="inclusive, RFC 3339")],
    to: Annotated[Rfc3339, Query(description=f"exclusive, RFC 3339; at most {MAX_REPORT_RANGE.days} days after from")],
) -> Response:
    check_range(from_, to, MAX_REPORT_RANGE, "of cases")
    async with rt.db.acquire() as conn:
        field_names = await report_store.report_field_names(conn)

    async def lines() -> AsyncIterator[str]:
        yield csv_lines([[*CASE_COLUMNS, *(f"field.{n}" for n in field_names)]])
        after: tuple[datetime, str] = (from_, "")
        while True:
            async with rt.db.acquire() as conn:
                batch = await report_store.report_batch(conn, from_, to, after, REPORT_BATCH)
            if not batch:
                return
            yield csv_lines(case_row(r, field_names) for r in batch)
            if len(batch) < REPORT_BATCH:
                return
            after = (batch[-1]["opened_at"], batch[-1]["case_id"])

    name = f"cases-{_stamp(from_)}-{_stamp(to)}.csv"
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=_attachment(name))


def _kpi_row(kind: str, group: str | None, cases: dict[str, Any], handled: int, csat: dict[str, Any]) -> list[Any]:
    return [
        kind, group, cases["opened"], cases["resolved"], handled, cases["closed_same_day"],
        cases["first_response_seconds"]["mean"], cases["first_response_seconds"]["p90"],
        cases["resolution_seconds"]["mean"], cases["resolution_seconds"]["p90"],
        cases["handle_seconds"]["mean"], cases["handle_seconds"]["p90"],
        cases["first_contact_resolution_pct"], cases["sla_compliance_pct"],
        csat["responses"], csat["mean"], csat["satisfied_pct"],
    ]  # fmt: skip


@router.get(
    "/v1/reports/kpis.csv",
    operation_id="getKpiReportCsv",
    tags=["analytics"],
    dependencies=[require("ops")],
    summary="The grouped case KPIs of /v1/kpis as CSV: one row per group, then the totals",
    response_class=StreamingResponse,
    responses=CSV_ERRORS,
)
async def get_kpi_report(
    request: Request,
    rt: AnalyticsRuntime,
    from_: Annotated[Rfc3339, Query(alias="from", description="inclusive, RFC 3339")],
    to: Annotated[Rfc3339, Query(description="exclusive, RFC 3339")],
    group_by: Annotated[
        str,
        Query(
            pattern=GROUP_BY_PATTERN,
            description="team, owner, type, tag or field.<name>",
        ),
    ],
    window: Literal["hour", "day"] = "day",
    channel: Channel | None = None,
    region: Annotated[str | None, Query(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")] = None,
    case_type: CaseType | None = None,
    priority: Priority | None = None,
    team: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> Response:
    check_single(request, "group_by")
    check_range(from_, to, MAX_RANGE[window], f"with window={window}")
    q = store.KpiQuery(from_, to, window, channel, region, case_type, priority, team)
    async with rt.db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        totals = (await store.kpis(conn, q))["totals"]
        result = await grouped(conn, q, group_by)
    rows = [_kpi_row("group", g["group"], g["cases"], g["cases_handled"], g["csat"]) for g in result["groups"]]
    rows.append(_kpi_row("total", None, totals["cases"], totals["cases"]["resolved"], totals["csat"]))
    body = csv_lines([KPI_COLUMNS, *rows])
    name = f"kpis-by-{group_by.replace('.', '-')}-{_stamp(from_)}-{_stamp(to)}.csv"
    return StreamingResponse(iter([body]), media_type="text/csv; charset=utf-8", headers=_attachment(name))
