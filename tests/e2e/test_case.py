"""case end to end, the four services as real processes: a complaint opens a case, agents work
it over HTTP, its events reach every timeline, the survey answer links back; two agents race;
an SLA breach that falls due while case is down fires once after the restart."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client, eventually, running_stack
from tests.e2e.conftest import digests, timeline_ids

pytestmark = pytest.mark.e2e

# Business time is every second (24x7); urgent cases get targets of seconds, the rest the
# defaults (hours), so timers only act where a test asks for them.
URGENT_FIRST_RESPONSE_S, URGENT_RESOLUTION_S = 8, 12  # warnings at half: 4 s and 6 s
CASE_ENV = {
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "CASE_BUSINESS_CALENDAR": '"24x7"',
    "CASE_SLA_POLICY": orjson.dumps(
        {"urgent": {"first_response": URGENT_FIRST_RESPONSE_S, "resolution": URGENT_RESOLUTION_S}}
    ).decode(),
    "CASE_SLA_WARNING_SHARE": "0.5",
    "CASE_TIMER_POLL_INTERVAL_MS": "200",
}


@pytest.fixture(scope="module")
def case_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("case-stack"), CASE_ENV) as s:
        yield s


def interaction(customer: dict[str, Any], kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "customer": customer,
        "channel": extra.pop("channel", "web"),
        "direction": "inbound",
        "kind": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": extra.pop("content", "the repair did not work"),
        **extra,
    }


async def complaint_case(stack: Stack, client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post a complaint to intake; return intake's answer and the case it opened."""
    email = f"case-{uuid.uuid4().hex[:8]}@example.com"
    r = await client.post(
        f"{stack.services['intake'].url}/v1/interactions", json=interaction({"email": email}, "complaint")
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    case_url = stack.services["case"].url

    async def opened() -> dict[str, Any] | None:
        listed = (await client.get(f"{case_url}/v1/cases", params={"customer_id": accepted["customer_id"]})).json()
        return listed["cases"][0] if listed["cases"] else None

    return accepted, await eventually(opened, what="the complaint opens a case")


async def command(
    client: httpx.AsyncClient, url: str, case_id: str, name: str, version: int | None, **body: Any
) -> httpx.Response:
    headers = {"If-Match": f'"{version}"'} if version is not None else {}
    return await client.post(f"{url}/v1/cases/{case_id}/{name}", json=body, headers=headers)


async def test_a_complaint_becomes_a_case_that_agents_resolve_and_every_timeline_shows(case_stack: Stack) -> None:
    intake, case = case_stack.services["intake"].url, case_stack.services["case"].url
    async with api_client(timeout=10) as client:
        accepted, listed = await complaint_case(case_stack, client)
        customer, case_id = accepted["customer_id"], listed["case_id"]
        r = await client.get(f"{case}/v1/cases/{case_id}")
        assert r.status_code == 200 and r.headers["etag"] == '"1"'
        opened = r.json()
        assert (opened["status"], opened["type"], opened["priority"]) == ("new", "complaint", "normal")
        assert opened["opened_by"] == accepted["event_id"] and opened["allowed_transitions"] == ["open"]
        assert opened["sla"]["clock"] == "running" and opened["sla"]["first_response"]["due_at"]

        r = await command(client, case, case_id, "assign", 1, owner="ana")
        assert r.status_code == 200, r.text
        assert (r.json()["owner"], r.headers["etag"]) == ("ana", '"2"')
        r = await command(client, case, case_id, "status", 2, status="open")
        assert r.status_code == 200 and r.json()["first_response_at"]
        r = await command(client, case, case_id, "notes", 3, author="ana", text="sending a technician")
        assert r.status_code == 200
        r = await command(client, case, case_id, "status", None, status="resolved", expected_version=4)
        assert r.status_code == 200, r.text
        resolved = r.json()
        assert resolved["status"] == "resolved" and len(resolved["event_ids"]) == 2  # + follow-up (survey)

        # Every bad command gets a 4xx with a reason, and changes nothing.
        bad = [
            (await command(client, case, case_id, "status", 6, status="pending"), 409, "illegal_transition"),
            (await command(client, case, case_id, "assign", 3, owner="ben"), 409, "concurrency_conflict"),
            (await command(client, case, case_id, "assign", None, owner="ben"), 428, "precondition_required"),
            (await command(client, case, case_id, "priority", 6, priority="extreme"), 422, "validation_failed"),
            (await command(client, case, case_id, "assign", 6, owner="ana"), 409, "no_change"),
            (await command(client, case, "no-such-case", "assign", 1, owner="ana"), 404, "case_not_found"),
            (
                await command(client, case, case_id, "interactions", 6, interaction_event_id=str(uuid.uuid4())),
                404,
                "interaction_not_found",
            ),
        ]
        for response, status, error in bad:
            assert (response.status_code, response.json()["error"]) == (status, error), response.text
        assert bad[0][0].json()["allowed"] == ["closed", "open"]
        r = await client.post(f"{case}/v1/cases/{case_id}/status", json={"status": "closed"}, headers={"If-Match": "x"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "header.If-Match"

        # The customer answers the CSAT survey: it links back to the case with the score.
        r = await client.post(
            f"{intake}/v1/interactions",
            json=interaction({"id": customer}, "survey_response", channel="survey", content="9"),
        )
        survey = r.json()

        async def scored() -> dict[str, Any] | None:
            body = (await client.get(f"{case}/v1/cases/{case_id}")).json()
            return body if body["survey"]["score"] is not None else None

        final = await eventually(scored, what="the survey answer links to the case")
        assert final["survey"]["score"] == 9 and survey["event_id"] in final["interactions"]
        history = [h["type"] for h in final["history"]]
        assert history == [
            "crm.case.opened.v1",
            "crm.case.assigned.v1",
            "crm.case.status_changed.v1",
            "crm.case.note_added.v1",
            "crm.case.status_changed.v1",
            "crm.case.followup_requested.v1",
            "crm.case.interaction_linked.v1",
            "crm.case.survey_recorded.v1",
        ]
        listed_resolved = (await client.get(f"{case}/v1/cases", params={"status": "resolved", "owner": "ana"})).json()
        assert case_id in [c["case_id"] for c in listed_resolved["cases"]]

        # Every case event is on the customer's timeline in all four services, with equal digests.
        # (Not an exact count: other services may react to case events with events of their own.)
        ours = {*accepted["event_ids"], *survey["event_ids"], *(h["event_id"] for h in final["history"])}

        async def converged() -> dict[str, tuple[int, str]] | None:
            d = await digests(case_stack, customer, client)
            if len(set(d.values())) != 1:
                return None
            for svc in case_stack.services.values():
                if not ours <= set(await timeline_ids(svc.url, customer)):
                    return None
            return d

        await eventually(converged, timeout_s=60, what=f"four equal digests over our {len(ours)} events")


async def test_two_agents_updating_one_case_at_once_one_wins_the_other_gets_409(case_stack: Stack) -> None:
    case = case_stack.services["case"].url
    async with api_client(timeout=10) as client:
        _, listed = await complaint_case(case_stack, client)
        case_id, version = listed["case_id"], listed["version"]
        first, second = await asyncio.gather(
            command(client, case, case_id, "assign", version, owner="ana"),
            command(client, case, case_id, "priority", version, priority="high", reason="angry"),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        loser = first if first.status_code == 409 else second
        assert loser.json()["error"] == "concurrency_conflict"
        after = (await client.get(f"{case}/v1/cases/{case_id}")).json()
        assert after["version"] == version + 1
        # Exactly the winner's change happened; the loser's was not silently applied on top.
        won_assign = first.status_code == 200
        assert (after["owner"] == "ana") is won_assign
        assert (after["priority"] == "high") is not won_assign


async def sla_events(dsn: str, case_id: str) -> list[tuple[str, str, str | None]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT type, data->>'target' AS target, data->>'due_at' AS due_at FROM events"
            " WHERE stream_id = $1 AND type IN ('crm.case.sla_warning.v1', 'crm.case.sla_breached.v1',"
            " 'crm.case.escalated.v1') ORDER BY version",
            f"case-{case_id}",
        )
        return [(r["type"], r["target"], r["due_at"]) for r in rows]
    finally:
        await conn.close()


async def test_a_breach_that_falls_due_while_case_is_down_fires_once_after_restart(case_stack: Stack) -> None:
    case_svc = case_stack.services["case"]
    dsn = case_stack.postgres.dsn("crm_case")
    async with api_client(timeout=10) as client:
        accepted, listed = await complaint_case(case_stack, client)
        case_id = listed["case_id"]
        r = await command(client, case_svc.url, case_id, "priority", listed["version"], priority="urgent")
        assert r.status_code == 200, r.text
        case_svc.kill()  # SIGKILL: nothing in memory survives
        killed_at = datetime.now(UTC)
        assert await sla_events(dsn, case_id) == [], "too slow: the timers fired before the kill"

        await asyncio.sleep(URGENT_RESOLUTION_S + 1)  # every urgent target falls due meanwhile
        restarted_at = datetime.now(UTC)
        case_svc.start()
        await asyncio.to_thread(case_svc.wait_ready)

        async def fired() -> list[tuple[str, str, str | None]] | None:
            found = await sla_events(dsn, case_id)
            return found if len(found) == 5 else None

        found = await eventually(fired, what="the SLA events after the restart")
        await asyncio.sleep(1.5)  # several more timer rounds: nothing fires a second time
        assert await sla_events(dsn, case_id) == found
        assert sorted((t, target) for t, target, _ in found) == [
            ("crm.case.escalated.v1", None),
            ("crm.case.sla_breached.v1", "first_response"),
            ("crm.case.sla_breached.v1", "resolution"),
            ("crm.case.sla_warning.v1", "first_response"),
            ("crm.case.sla_warning.v1", "resolution"),
        ]
        for _, _, due_at in found:
            if due_at is not None:
                assert killed_at < datetime.fromisoformat(due_at) < restarted_at  # due while the service was down

        # The restarted service published them: they reach intake's timeline too.
        breach_ids = {
            h["event_id"]
            for h in (await client.get(f"{case_svc.url}/v1/cases/{case_id}")).json()["history"]
            if h["type"] == "crm.case.sla_breached.v1"
        }

        async def on_intake_timeline() -> bool | None:
            ids = await timeline_ids(case_stack.services["intake"].url, accepted["customer_id"])
            return True if breach_ids <= set(ids) else None

        await eventually(on_intake_timeline, what="breach events on intake's timeline")
        listed_breached = (await client.get(f"{case_svc.url}/v1/cases", params={"breached": "true"})).json()
        assert [c["queue"] for c in listed_breached["cases"] if c["case_id"] == case_id] == ["support-escalations"]
