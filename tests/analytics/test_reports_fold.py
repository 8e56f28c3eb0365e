"""The per-case data behind the reports, folded on a real PostgreSQL: owners, closures, SLA
targets, CSAT, fields and tags from case events; the same rows whatever the batching (a replay
from the log rebuilds them); and CSV cells that no spreadsheet runs as a formula."""

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from analytics import api, report_store
from analytics.projections import KpiProjection
from analytics.report_api import CASE_COLUMNS, case_row, cell, csv_lines
from analytics.store import KpiQuery
from crmtools.infra import EmbeddedPostgres
from eventkit import db
from eventkit.envelope import Envelope
from eventkit.eventstore import EventStore
from servicekit.http import ApiError

from contracts import fields as f
from tests.conftest import fresh_database
from tests.e2e.test_analytics import ev
from tests.e2e.test_reports import DAY, ReportScript, at

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "analytics" / "migrations"
RANGE = (DAY, DAY + timedelta(days=2))


@pytest.fixture
async def pools(postgres: EmbeddedPostgres) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    first = await fresh_database(postgres, [MIGRATIONS])
    second = await fresh_database(postgres, [MIGRATIONS])
    async with await db.create_pool(first, 2) as a, await db.create_pool(second, 2) as b:
        yield a, b


async def fold(pool: asyncpg.Pool, batches: Sequence[Sequence[Envelope]]) -> None:
    projection = KpiProjection(EventStore("analytics"), "analytics")
    for batch in batches:
        async with pool.acquire() as conn, conn.transaction():
            await projection.apply(conn, list(batch))


async def report(pool: asyncpg.Pool) -> list[list[Any]]:
    async with pool.acquire() as conn:
        names = await report_store.report_field_names(conn)
        rows = await report_store.report_batch(conn, *RANGE, (RANGE[0], ""), 100)
    return [[*CASE_COLUMNS, *(f"field.{n}" for n in names)]] + [case_row(r, names) for r in rows]


async def groups(pool: asyncpg.Pool, by: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await report_store.grouped_kpis(conn, KpiQuery(*RANGE, "day"), report_store.GroupBy.parse(by))


def later_events(script: ReportScript) -> list[Envelope]:
    """After the script: A handed back to the queue, B closed, C's tags set then emptied, D's field
    cleared, the model field redefined as personal (version 2) and a late version 1 again."""
    c = script.customer

    def case(type_: str, t: datetime, case_id: str, **data: Any) -> Envelope:
        return ev(type_, c, t, {"case_id": case_id, "customer_id": c, **data})[1]

    def definition(version: int, personal: bool) -> Envelope:
        d = f.FieldDefinition(name=script.model, type="enum", values=["X1", "X2"], personal=personal)
        data = f.FieldDefined(record="case", definition=d, version=version, defined_by="admin-key")
        e = ev(f.CASE_FIELD_DEFINED, c, at(20, day=1), data.model_dump(mode="json"))[1]
        return Envelope(e.id, e.type, e.source, f.field_subject("case", script.model), e.time, e.data, e.traceparent)

    return [
        case("crm.case.unassigned.v1", at(12, day=1), script.a, previous_owner="agent-a", team=script.team,
             reason="agent_offline"),
        case("crm.case.status_changed.v1", at(13, day=1), script.b, from_status="resolved", to_status="closed",
             reason=None, type="repair", priority="normal"),
        case(f.CASE_TAGS_CHANGED, at(14, day=1), script.c, added=["a", "b"], removed=[], tags=["a", "b"],
             changed_by="k"),
        case(f.CASE_TAGS_CHANGED, at(15, day=1), script.c, added=[], removed=["a", "b"], tags=[], changed_by="k"),
        case(f.CASE_FIELDS_SET, at(16, day=1), script.d, type="inquiry", values={script.note: None}, personal={},
             changed=[script.note], set_by="k"),
        definition(2, personal=True),
        definition(1, personal=False),
    ]  # fmt: skip


async def test_the_report_rows_are_the_same_folded_one_by_one_or_in_one_batch(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    script = ReportScript()
    events = [e for _, e in script.events()] + later_events(script)
    one_by_one, together = pools
    await fold(one_by_one, [[e] for e in events])
    await fold(together, [events])
    rows = await report(one_by_one)
    assert rows == await report(together)
    for by in ("owner", "tag", "type", f"field.{script.note}", "team"):
        assert await groups(one_by_one, by) == await groups(together, by), by

    header, *cases = rows
    got = {r[0]: dict(zip(header, r, strict=True)) for r in cases}
    a, b, c, d = (got[k] for k in (script.a, script.b, script.c, script.d))
    assert (a["owner"], a["first_assigned_at"], a["csat"]) == (None, at(9, 10), 9)  # back in the queue
    assert (b["status"], b["closed_at"], b["sla_met"]) == ("closed", at(13, day=1), False)  # resolution breached
    assert (a["sla_met"], c["sla_met"], c["tags"]) == (True, None, "")
    assert d[f"field.{script.note}"] is None and c[f"field.{script.note}"] == '=HYPERLINK("http://x")'
    # The model field is personal from version 2 on (the late version 1 changes nothing): no column.
    assert f"field.{script.model}" not in header and f"field.{script.serial}" not in header
    async with one_by_one.acquire() as conn:
        assert await report_store.personal_field(conn, script.model)
        assert not await report_store.personal_field(conn, script.note)
        owners = await report_store.grouped_kpis(conn, KpiQuery(*RANGE, "day"), report_store.GroupBy("owner"))
    assert [(g["group"], g["cases"]["opened"]) for g in owners] == [("agent-a", 1), ("agent-b", 1), (None, 2)]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+33 1 23", "'+33 1 23"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        (None, ""),
        (True, "true"),
        (1200.0, "1200.0"),
        (datetime(2026, 4, 6, 9, tzinfo=UTC), "2026-04-06T09:00:00+00:00"),
    ],
)
def test_a_cell_never_starts_a_formula(value: Any, shown: str) -> None:
    assert cell(value) == shown


def test_csv_lines_quote_what_needs_quoting_and_read_back_whole() -> None:
    tricky = ['a, "b"\nc', "=cmd|' /C calc'!A0", "ü€", "x;y"]
    text = csv_lines([tricky])
    assert text.endswith("\r\n")
    assert next(csv.reader(io.StringIO(text))) == ['a, "b"\nc', "'=cmd|' /C calc'!A0", "ü€", "x;y"]


async def test_more_groups_than_the_limit_is_a_422_not_a_huge_answer(
    pools: tuple[asyncpg.Pool, asyncpg.Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = ReportScript()
    pool, _ = pools
    await fold(pool, [[e for _, e in script.events()]])
    monkeypatch.setattr(api, "MAX_GROUPS", 2)  # the script has three owner rows (two agents and none)
    async with pool.acquire() as conn:
        with pytest.raises(ApiError) as refused:
            await api.grouped(conn, KpiQuery(*RANGE, "day"), "owner")
        assert (refused.value.status, refused.value.body["error"]) == (422, "too_many_groups")
        answer = await api.grouped(conn, KpiQuery(*RANGE, "day"), "team")  # one team: within the limit
    assert [g["group"] for g in answer["groups"]] == [script.team] and answer["sums_to_totals"] is True
