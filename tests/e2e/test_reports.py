"""Reports end to end (issue 29): KPIs grouped by owner, type, tag and case field, and the CSV
reports, from case events published through the real broker (scripted, answers worked out by
hand) and from a few hundred cases worked through the real case service."""

import asyncio
import csv
import io
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from crm_client import AsyncClient, ValidationFailed
from crmtools.devstack import Stack
from eventkit.envelope import Envelope

from contracts import fields as f
from tests.conftest import ADMIN_KEY, api_client, eventually
from tests.e2e.test_analytics import ev, publish

pytestmark = pytest.mark.e2e
DAY = datetime(2026, 4, 6, tzinfo=UTC)  # a day no other scripted test uses


def at(hh: int, mm: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hh, minutes=mm)


class ReportScript:
    """Four cases of one team of their own (so a team filter isolates them), with fields and tags.

    A repair/high, agent-a: reply at +20 min, resolved at +2 h, model X1, tags warranty and
      urgent-fix, CSAT 9.
    B repair/normal, agent-b: outbound interaction linked at +40 min, resolution SLA breached,
      resolved the next day at +24 h, model X2, tag warranty.
    C installation/low, agent-a: opened by hand at +15 min, still open; a text field whose value
      would be a spreadsheet formula, another with a comma, a quote and a line break.
    D inquiry/normal, never assigned, still new.
    """

    def __init__(self) -> None:
        self.team = f"rpt-{uuid.uuid4().hex[:8]}"
        self.customer = f"rpt-{uuid.uuid4().hex[:10]}"
        self.a, self.b, self.c, self.d = (f"case-{uuid.uuid4().hex[:10]}" for _ in range(4))
        self.model = f"model_{uuid.uuid4().hex[:6]}"
        self.serial = f"serial_{uuid.uuid4().hex[:6]}"
        self.note = f"note_{uuid.uuid4().hex[:6]}"

    def events(self) -> list[tuple[str, Envelope]]:
        c, team, out = self.customer, self.team, []

        def case(type_: str, t: datetime, case_id: str, **data: Any) -> None:
            out.append(ev(type_, c, t, {"case_id": case_id, "customer_id": c, **data}))

        def define(name: str, type_: str, personal: bool, values: list[str] | None = None) -> None:
            definition = f.FieldDefinition(name=name, type=type_, values=values, personal=personal)  # type: ignore[arg-type]
            data = f.FieldDefined(record="case", definition=definition, version=1, defined_by="admin-key")
            topic, e = ev(f.CASE_FIELD_DEFINED, c, at(7), data.model_dump(mode="json"))
            out.append(
                (topic, Envelope(e.id, e.type, e.source, f.field_subject("case", name), e.time, e.data, e.traceparent))
            )

        def opened(case_id: str, t: datetime, type_: str, priority: str) -> None:
            case("crm.case.opened.v1", t, case_id, type=type_, priority=priority, status="new", team=team,
                 opened_by=None)  # fmt: skip

        def status(case_id: str, t: datetime, frm: str, to: str, type_: str, priority: str) -> None:
            case("crm.case.status_changed.v1", t, case_id, from_status=frm, to_status=to, reason=None, type=type_,
                 priority=priority)  # fmt: skip

        def assigned(case_id: str, t: datetime, owner: str) -> None:
            case("crm.case.assigned.v1", t, case_id, owner=owner, previous_owner=None, team=team)

        def fields(case_id: str, t: datetime, type_: str, values: dict[str, Any], personal: dict[str, Any]) -> None:
            data = f.CaseFieldsSet(case_id=case_id, customer_id=c, type=type_, values=values, personal=personal,  # type: ignore[arg-type]
                                   changed=[*values, *personal], set_by="agent-key")  # fmt: skip
            out.append(ev(f.CASE_FIELDS_SET, c, t, data.model_dump(mode="json")))

        def tags(case_id: str, t: datetime, now: list[str]) -> None:
            case(f.CASE_TAGS_CHANGED, t, case_id, added=now, removed=[], tags=sorted(now), changed_by="agent-key")

        define(self.model, "enum", False, ["X1", "X2"])
        define(self.serial, "text", True)
        define(self.note, "text", False)
        a, b, cc, d = self.a, self.b, self.c, self.d
        opened(a, at(9), "repair", "high")
        assigned(a, at(9, 10), "agent-a")
        case("crm.case.reply_sent.v1", at(9, 20), a, channel="email", author="agent-a", body="on it", team=team,
             type="repair", priority="high")  # fmt: skip
        status(a, at(9, 30), "new", "open", "repair", "high")
        fields(a, at(9, 40), "repair", {self.model: "X1"}, {self.serial: "[sealed]"})
        tags(a, at(9, 41), ["warranty", "urgent-fix"])
        status(a, at(11), "open", "resolved", "repair", "high")
        case("crm.case.survey_recorded.v1", at(12), a, score=9, interaction_event_id=str(uuid.uuid4()))
        opened(b, at(10), "repair", "normal")
        assigned(b, at(10, 30), "agent-b")
        case("crm.case.interaction_linked.v1", at(10, 40), b, interaction_event_id=str(uuid.uuid4()), kind="message",
             channel="email", direction="outbound")  # fmt: skip
        fields(b, at(10, 50), "repair", {self.model: "X2"}, {})
        tags(b, at(10, 51), ["warranty"])
        status(b, at(11), "new", "open", "repair", "normal")
        case("crm.case.sla_breached.v1", at(18), b, target="resolution", due_at=at(18).isoformat(), owner="agent-b",
             team=team, priority="normal", type="repair")  # fmt: skip
        status(b, at(10, day=1), "open", "resolved", "repair", "normal")
        opened(cc, at(13), "installation", "low")
        assigned(cc, at(13, 5), "agent-a")
        status(cc, at(13, 15), "new", "open", "installation", "low")
        fields(cc, at(13, 20), "installation", {self.note: '=HYPERLINK("http://x")'}, {})
        opened(d, at(14), "inquiry", "normal")
        fields(d, at(14, 5), "inquiry", {self.note: 'a, "b"\nc'}, {})
        return out


def _cases(group: dict[str, Any]) -> tuple[int, int, int, int]:
    c = group["cases"]
    return c["opened"], c["resolved"], group["cases_handled"], group["csat"]["responses"]


async def kpis(client: httpx.AsyncClient, url: str, team: str, **params: Any) -> httpx.Response:
    span = {"from": DAY.isoformat(), "to": (DAY + timedelta(days=2)).isoformat()}
    return await client.get(f"{url}/v1/kpis", params={**span, "team": team, **params})


async def test_grouped_kpis_and_csv_of_a_scripted_team_match_the_hand_worked_answers(stack: Stack) -> None:
    script = ReportScript()
    await publish(stack.broker.bootstrap, script.events())
    url = stack.services["analytics"].url
    async with api_client(timeout=10) as client:
        # Until every event is folded: the last ones are D's field and B's resolution.
        body: dict[str, Any] = {}
        for _ in range(150):
            body = (await kpis(client, url, script.team, group_by="owner")).json()
            last = _cases(body["groups"][-1]) if body["groups"] else None
            if last == (1, 0, 0, 0) and body["totals"]["cases"]["resolved"] == 2:
                by_model = (await kpis(client, url, script.team, group_by=f"field.{script.model}")).json()
                if [g["group"] for g in by_model["groups"]] == ["X1", "X2", None]:
                    break
            await asyncio.sleep(0.2)
        totals = body["totals"]["cases"]
        assert (totals["opened"], totals["resolved"], body["totals"]["csat"]["responses"]) == (4, 2, 1)
        # Per agent: agent-a has A (resolved, CSAT) and C; agent-b has B; D has no owner (null, last).
        owners = {g["group"]: g for g in body["groups"]}
        assert list(owners) == ["agent-a", "agent-b", None]
        assert {k: _cases(g) for k, g in owners.items()} == {
            "agent-a": (2, 1, 1, 1),
            "agent-b": (1, 1, 1, 0),
            None: (1, 0, 0, 0),
        }
        assert body["group_by"] == "owner" and body["sums_to_totals"] is True
        # First responses: A 1200 s (the reply), B 2400 s (the outbound link), C 900 s; D none.
        assert owners["agent-a"]["cases"]["first_response_seconds"]["mean"] == 1050.0
        assert owners["agent-b"]["cases"]["first_response_seconds"]["mean"] == 2400.0
        assert totals["first_response_seconds"]["mean"] == 1500.0  # the groups' means weighted by responses
        # Handle time (first assignment to resolution): A 6600 s, B 84600 s.
        assert owners["agent-a"]["cases"]["handle_seconds"]["mean"] == 6600.0
        assert totals["handle_seconds"]["mean"] == 45600.0
        assert (owners["agent-b"]["cases"]["sla_compliance_pct"], totals["sla_compliance_pct"]) == (0.0, 50.0)
        for key in ("opened", "resolved", "closed_same_day"):
            assert sum(g["cases"][key] for g in body["groups"]) == totals[key]

        by_type = (await kpis(client, url, script.team, group_by="type")).json()
        assert {g["group"]: g["cases"]["opened"] for g in by_type["groups"]} == {
            "installation": 1,
            "inquiry": 1,
            "repair": 2,
        }
        by_tag = (await kpis(client, url, script.team, group_by="tag")).json()
        assert {g["group"]: g["cases"]["opened"] for g in by_tag["groups"]} == {
            "urgent-fix": 1,
            "warranty": 2,
            None: 2,
        }
        assert by_tag["sums_to_totals"] is False  # A counts under both its tags
        assert {g["group"]: _cases(g) for g in by_model["groups"]} == {
            "X1": (1, 1, 1, 1),
            "X2": (1, 1, 1, 0),
            None: (2, 0, 0, 0),
        }
        personal = await kpis(client, url, script.team, group_by=f"field.{script.serial}")
        assert personal.status_code == 422 and personal.json()["error"] == "personal_field"
        plain = (await kpis(client, url, script.team)).json()
        assert "groups" not in plain and "sums_to_totals" not in plain and plain["totals"] == body["totals"]

        # The grouped KPIs as CSV: the same rows, then the totals.
        span = {"from": DAY.isoformat(), "to": (DAY + timedelta(days=2)).isoformat()}
        r = await client.get(f"{url}/v1/reports/kpis.csv", params={**span, "team": script.team, "group_by": "owner"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        assert 'filename="kpis-by-owner-' in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [(x["row"], x["group"], x["opened"], x["cases_handled"]) for x in rows] == [
            ("group", "agent-a", "2", "1"),
            ("group", "agent-b", "1", "1"),
            ("group", "", "1", "0"),
            ("total", "", "4", "2"),
        ]

        # The case report: one row per case, fields as columns (not the personal one), injection neutralised.
        r = await client.get(f"{url}/v1/reports/cases.csv", params=span)
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == 'attachment; filename="cases-20260406T000000Z-20260408T000000Z.csv"'
        # The console (intake's origin) reads that name too: CORS exposes the header.
        console = stack.services["intake"].url
        seen = await client.get(f"{url}/v1/reports/cases.csv", params=span, headers={"Origin": console})
        assert "content-disposition" in seen.headers["access-control-expose-headers"].lower()
        reader = csv.DictReader(io.StringIO(r.text))
        assert reader.fieldnames is not None
        assert f"field.{script.model}" in reader.fieldnames and f"field.{script.note}" in reader.fieldnames
        assert f"field.{script.serial}" not in reader.fieldnames
        got = {x["case_id"]: x for x in reader if x["team"] == script.team}
        assert list(got) == [script.a, script.b, script.c, script.d]  # in order of opening
        a, b, c, d = (got[k] for k in (script.a, script.b, script.c, script.d))
        assert (a["owner"], a["status"], a["first_response_seconds"], a["resolution_seconds"]) == (
            "agent-a",
            "resolved",
            "1200.0",
            "7200.0",
        )
        assert (a["sla_met"], a["csat"], a["tags"], a[f"field.{script.model}"]) == (
            "true",
            "9",
            "urgent-fix;warranty",
            "X1",
        )
        assert (a["opened_at"], a["first_assigned_at"]) == (at(9).isoformat(), at(9, 10).isoformat())
        assert (b["sla_met"], b["resolution_seconds"], b["tags"]) == ("false", "86400.0", "warranty")
        assert (c["sla_met"], c["resolved_at"], c["owner"]) == ("", "", "agent-a")  # open: not known yet
        assert c[f"field.{script.note}"] == '\'=HYPERLINK("http://x")'  # no formula in a spreadsheet
        assert d[f"field.{script.note}"] == 'a, "b"\nc'  # quoted, read back whole
        assert (d["owner"], d["first_response_at"], d["status"]) == ("", "", "new")
        assert '"a, ""b""\nc"' in r.text


async def test_the_python_client_reads_grouped_kpis_and_the_csv_reports(stack: Stack) -> None:
    script = ReportScript()
    await publish(stack.broker.bootstrap, script.events())
    end = DAY + timedelta(days=2)
    async with AsyncClient(stack.services["intake"].url, ADMIN_KEY, analytics_url=stack.services["analytics"].url) as c:

        async def folded() -> bool | None:  # the last event: D's field
            rows = csv.DictReader(io.StringIO(await c.case_report_csv(DAY, end)))
            return True if any(r["case_id"] == script.d and r[f"field.{script.note}"] for r in rows) else None

        await eventually(folded, 30, "the script folded")
        by_type = await c.kpis(DAY, end, group_by="type", team=script.team)
        assert by_type.sums_to_totals is True and by_type.groups is not None
        assert [(g.group, g.cases.opened) for g in by_type.groups] == [
            ("inquiry", 1),
            ("installation", 1),
            ("repair", 2),
        ]  # by value
        assert (await c.kpis(DAY, end, team=script.team)).groups is None
        rows = list(csv.DictReader(io.StringIO(await c.kpi_report_csv(DAY, end, "tag", team=script.team))))
        assert [(r["row"], r["group"], r["opened"]) for r in rows] == [
            ("group", "urgent-fix", "1"),
            ("group", "warranty", "2"),
            ("group", "", "2"),
            ("total", "", "4"),
        ]
        cases = list(csv.DictReader(io.StringIO(await c.case_report_csv(DAY, end))))
        assert [r["case_id"] for r in cases if r["team"] == script.team] == [script.a, script.b, script.c, script.d]
        with pytest.raises(ValidationFailed) as refused:
            await c.case_report_csv(end, DAY)
        assert refused.value.errors[0].field == "query.to"


async def test_report_ranges_are_checked(stack: Stack) -> None:
    url = stack.services["analytics"].url
    async with api_client(timeout=10) as client:
        for path in ("/v1/reports/cases.csv", "/v1/reports/kpis.csv", "/v1/kpis"):
            extra = {"group_by": "team"} if "kpis" in path else {}
            same = await client.get(f"{url}{path}", params={"from": DAY.isoformat(), "to": DAY.isoformat(), **extra})
            assert same.status_code == 422 and same.json()["errors"][0]["field"] == "query.to", (path, same.text)
            far = (DAY + timedelta(days=400)).isoformat()
            long = await client.get(f"{url}{path}", params={"from": DAY.isoformat(), "to": far, **extra})
            assert long.status_code == 422, (path, long.text)
        missing = await client.get(
            f"{url}/v1/reports/kpis.csv", params={"from": DAY.isoformat(), "to": at(1, day=1).isoformat()}
        )
        assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "query.group_by"
        bad = await client.get(
            f"{url}/v1/kpis", params={"from": DAY.isoformat(), "to": at(1).isoformat(), "group_by": "field.A;drop"}
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.group_by"


# --- a few hundred cases through the real case service -----------------------------------------

CASES = 300
CUSTOMERS = 60
OWNERS = ["agent-r1", "agent-r2", "agent-r3", "agent-r4"]


async def _command(client: httpx.AsyncClient, url: str, case: dict[str, Any], path: str, body: dict[str, Any]) -> None:
    r = await client.post(
        f"{url}/v1/cases/{case['case_id']}/{path}", json={**body, "expected_version": case["version"]}
    )
    assert r.status_code == 200, r.text
    case["version"] = r.json()["version"]


async def _all_cases(client: httpx.AsyncClient, url: str, team: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"team": team, "limit": 500, **({"before": before} if before else {})}
        r = await client.get(f"{url}/v1/cases", params=params)
        assert r.status_code == 200, r.text
        out.extend(r.json()["cases"])
        before = r.json()["next_before"]
        if not before:
            return out


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


async def test_the_csv_of_a_few_hundred_cases_matches_the_cases_api_row_by_row(stack: Stack) -> None:
    rng = random.Random(29)
    intake, case_url = stack.services["intake"].url, stack.services["case"].url
    analytics = stack.services["analytics"].url
    team = f"rpt-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(minutes=1)
    async with api_client(timeout=20) as client:
        # Customers the case service knows: one message each (messages open no case).
        items = [
            {"customer": {"email": f"rpt-{uuid.uuid4().hex[:10]}@example.com"}, "channel": "web",
             "direction": "inbound", "kind": "message", "occurred_at": datetime.now(UTC).isoformat(),
             "content": "hello"}
            for _ in range(CUSTOMERS)
        ]  # fmt: skip
        r = await client.post(f"{intake}/v1/interactions:batch", json={"items": items})
        assert r.status_code == 202, r.text
        accepted = r.json()["items"]
        customers = [x["customer_id"] for x in accepted]
        for x in accepted:
            page = await client.get(
                f"{case_url}/v1/customers/{x['customer_id']}/timeline",
                params={"wait_for": x["event_id"], "timeout_ms": 15_000},
            )
            assert page.status_code == 200, page.text

        # Typed fields, defined by the admin on the case service: one reported, one personal (never reported).
        model, serial = f"rpt_model_{uuid.uuid4().hex[:6]}", f"rpt_serial_{uuid.uuid4().hex[:6]}"
        for definition in (
            {"name": model, "type": "enum", "values": ["M-1", "M-2", "=M3"]},
            {"name": serial, "type": "text", "personal": True},
        ):
            r = await client.post(f"{case_url}/v1/admin/fields", json=definition)
            assert r.status_code == 201, r.text
        sem = asyncio.Semaphore(8)

        async def work(i: int) -> dict[str, Any]:
            async with sem:
                body = {"customer_id": customers[i % CUSTOMERS], "type": rng.choice(["repair", "installation",
                        "billing", "complaint"]), "priority": rng.choice(["low", "normal", "high", "urgent"]),
                        "team": team, "title": f"case {i}"}  # fmt: skip
                r = await client.post(f"{case_url}/v1/cases", json=body)
                assert r.status_code == 201, r.text
                case = r.json()
                if i % 5 == 0:  # one in five: a product model, a serial number and tags
                    values = {model: ["M-1", "M-2", "=M3"][i % 3], serial: f"SN-{i}"}
                    await _command(client, case_url, case, "fields", {"values": values})
                    await _command(client, case_url, case, "tags", {"add": ["rpt", f"batch-{i % 2}"]})
                # Three in four get an owner; of those, half are resolved and some of those closed.
                if i % 4:
                    await _command(client, case_url, case, "assign", {"owner": OWNERS[i // 4 % len(OWNERS)]})
                    if i % 2:
                        await _command(client, case_url, case, "status", {"status": "open"})
                        await _command(client, case_url, case, "status", {"status": "resolved"})
                        if i % 3 == 0:
                            await _command(client, case_url, case, "status", {"status": "closed"})
                return case

        await asyncio.gather(*(work(i) for i in range(CASES)))
        end = datetime.now(UTC) + timedelta(minutes=1)
        listed = {c["case_id"]: c for c in await _all_cases(client, case_url, team)}
        assert len(listed) == CASES

        # Until analytics has folded every case as the case service has it.
        span = {"from": start.isoformat(), "to": end.isoformat()}
        rows: dict[str, dict[str, str]] = {}
        columns = ("case_id", "type", "priority", "team", "owner", "status")
        for _ in range(300):
            r = await client.get(f"{analytics}/v1/reports/cases.csv", params=span)
            assert r.status_code == 200, r.text
            rows = {x["case_id"]: x for x in csv.DictReader(io.StringIO(r.text)) if x["team"] == team}
            if len(rows) == CASES and all(
                tuple(rows[k][c] for c in columns) == tuple(listed[k][c] or "" for c in columns) for k in listed
            ):
                break
            await asyncio.sleep(0.5)
        assert rows.keys() == listed.keys()
        sem2 = asyncio.Semaphore(8)

        async def one(case_id: str) -> dict[str, Any]:
            async with sem2:
                got = await client.get(f"{case_url}/v1/cases/{case_id}")
                assert got.status_code == 200, got.text
                return dict(got.json())

        details = await asyncio.gather(*(one(k) for k in listed))
        for detail in details:
            row = rows[detail["case_id"]]
            assert tuple(row[c] for c in columns) == tuple(detail[c] or "" for c in columns), (row, detail)
            assert row["customer_id"] == detail["customer_id"]
            for moment in ("opened_at", "first_response_at", "resolved_at", "closed_at"):
                assert _when(row[moment]) == _when(detail[moment]), (moment, row, detail)
            assert (row["sla_met"] != "") == (detail["status"] in ("resolved", "closed"))
            assert row["tags"] == ";".join(sorted(detail["tags"]))
            shown = detail["fields"].get(model)
            assert row[f"field.{model}"] == ("" if shown is None else "'" + shown if shown[0] == "=" else shown)
            assert f"field.{serial}" not in row and all("SN-" not in v for v in row.values())

        # Grouped KPIs: the owners' rows sum to the totals; cases handled per agent are theirs.
        params = {**span, "team": team}
        body = (await client.get(f"{analytics}/v1/kpis", params={**params, "group_by": "owner"})).json()
        assert body["sums_to_totals"] is True
        totals = body["totals"]["cases"]
        assert totals["opened"] == CASES
        for key in ("opened", "resolved", "closed_same_day"):
            assert sum(g["cases"][key] for g in body["groups"]) == totals[key]
        handled = {o: sum(1 for c in listed.values() if c["owner"] == o and c["resolved_at"]) for o in OWNERS}
        assert {g["group"]: g["cases_handled"] for g in body["groups"] if g["group"]} == handled
        assert sum(handled.values()) == totals["resolved"] > 0
        unowned = [g for g in body["groups"] if g["group"] is None]
        assert unowned and unowned[0]["cases"]["opened"] == sum(1 for c in listed.values() if not c["owner"])
        by_model = (await client.get(f"{analytics}/v1/kpis", params={**params, "group_by": f"field.{model}"})).json()
        assert by_model["sums_to_totals"] is True
        assert {g["group"]: g["cases"]["opened"] for g in by_model["groups"]} == {
            "=M3": CASES // 15, "M-1": CASES // 15, "M-2": CASES // 15, None: CASES - CASES // 5
        }  # fmt: skip
        personal = await client.get(f"{analytics}/v1/kpis", params={**params, "group_by": f"field.{serial}"})
        assert personal.status_code == 422 and personal.json()["error"] == "personal_field"
        by_tag = (await client.get(f"{analytics}/v1/kpis", params={**params, "group_by": "tag"})).json()
        assert by_tag["sums_to_totals"] is False
        assert {g["group"]: g["cases"]["opened"] for g in by_tag["groups"]} == {
            "rpt": CASES // 5, "batch-0": CASES // 10, "batch-1": CASES // 10, None: CASES - CASES // 5
        }  # fmt: skip
        by_type = (await client.get(f"{analytics}/v1/kpis", params={**params, "group_by": "type"})).json()
        assert {g["group"]: g["cases"]["opened"] for g in by_type["groups"]} == {
            t: sum(1 for c in listed.values() if c["type"] == t) for t in {c["type"] for c in listed.values()}
        }

        # The dashboard's by-team gauges have the team's row; owners are never a metric label.
        async def team_gauge() -> str | None:
            text = (await client.get(f"{analytics}/metrics")).text
            line = f'crm_kpi_by_team_last_24h{{kpi="cases_opened",team="{team}"}} {float(CASES)}'
            return text if line in text else None

        metrics = await eventually(team_gauge, 60, "the by-team gauges of the new team")
        assert f'crm_kpi_by_team_last_24h{{kpi="cases_resolved",team="{team}"}} {float(totals["resolved"])}' in metrics
        assert not any(owner in metrics for owner in OWNERS)
