"""Agents, queues and automatic assignment on the real stack: cases go to online agents of their
team up to capacity, the rest wait and are assigned when capacity frees up; away stops new
assignments, offline hands the agent's cases back. Each test has a team of its own."""

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from crmtools.devstack import ServiceProcess, Stack
from crmtools.processes import free_port

from tests.conftest import api_client, eventually
from tests.e2e.conftest import digests
from tests.e2e.helpers import interaction_body, make_key, post_and_wait, wait_applied

pytestmark = pytest.mark.e2e


async def known_customer(stack: Stack, client: httpx.AsyncClient) -> str:
    body = interaction_body(f"agents-{uuid.uuid4().hex[:8]}@example.com")
    return str((await post_and_wait(client, stack, body, readers=["case"]))["customer_id"])


async def open_case(client: httpx.AsyncClient, url: str, customer_id: str, team: str) -> dict[str, Any]:
    r = await client.post(f"{url}/v1/cases", json={"customer_id": customer_id, "type": "repair", "team": team})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def queue_when(client: httpx.AsyncClient, url: str, team: str, assigned: int, waiting: int) -> dict[str, Any]:
    """The team's queue once it has this many assigned and waiting cases."""

    async def probe() -> dict[str, Any] | None:
        q: dict[str, Any] = (await client.get(f"{url}/v1/queues/{team}")).json()
        owned = sum(len(o["cases"]) for o in q["owners"])
        return q if (owned, len(q["unassigned"])) == (assigned, waiting) else None

    return await eventually(probe, timeout_s=30, what=f"{assigned} assigned and {waiting} waiting in {team}")


async def step(client: httpx.AsyncClient, url: str, case: dict[str, Any], *statuses: str) -> None:
    for status in statuses:
        r = await client.post(
            f"{url}/v1/cases/{case['case_id']}/status", json={"status": status, "expected_version": case["version"]}
        )
        assert r.status_code == 200, r.text
        case = r.json()


async def test_three_agents_of_capacity_two_take_six_of_seven_cases_and_the_seventh_when_one_is_resolved(
    stack: Stack,
) -> None:
    url = stack.services["case"].url
    team = f"team-{uuid.uuid4().hex[:8]}"
    supervisor = (await make_key(stack, "floor supervisor", ["supervisor"], readers=["case"]))["key"]
    agents = [f"{team}-{name}" for name in ("ana", "ben", "cem")]
    async with api_client(timeout=20) as client, api_client(supervisor, timeout=20) as sup:
        for agent_id in agents:
            r = await sup.put(f"{url}/v1/agents/{agent_id}", json={"name": agent_id, "teams": [team], "capacity": 2})
            assert r.status_code == 201 and r.json()["status"] == "offline", r.text
            again = await sup.put(
                f"{url}/v1/agents/{agent_id}", json={"name": agent_id, "teams": [team], "capacity": 2}
            )
            assert again.status_code == 200 and again.json()["event_ids"] == []  # the same profile: no event
            r = await sup.put(f"{url}/v1/agents/{agent_id}/status", json={"status": "online"})
            assert r.status_code == 200 and r.json()["status"] == "online", r.text
        customer = await known_customer(stack, client)
        cases = [await open_case(client, url, customer, team) for _ in range(7)]

        q = await queue_when(client, url, team, assigned=6, waiting=1)
        assert [c["case_id"] for c in q["unassigned"]] == [cases[-1]["case_id"]]  # the latest due waits
        assert sorted(o["owner"] for o in q["owners"]) == agents
        assert all(len(o["cases"]) == 2 and o["agent"]["load"] == 2 for o in q["owners"])
        listed = (await client.get(f"{url}/v1/agents", params={"team": team})).json()["agents"]
        assert [(a["agent_id"], a["status"], a["load"], a["capacity"]) for a in listed] == [
            (a, "online", 2, 2) for a in agents
        ]
        first = (await client.get(f"{url}/v1/cases/{cases[0]['case_id']}")).json()
        [assigned] = [h for h in first["history"] if h["type"] == "crm.case.assigned.v1"]
        assert assigned["data"]["reason"] == "auto" and assigned["data"]["owner"] in agents

        await step(client, url, first, "open", "resolved")  # capacity frees up
        q = await queue_when(client, url, team, assigned=6, waiting=0)
        last = (await client.get(f"{url}/v1/cases/{cases[-1]['case_id']}")).json()
        assert last["owner"] == first["owner"]
        # The case events are on the customer's timeline everywhere alike; the agent events on none.
        await wait_applied(client, stack, customer, last["history"][-1]["event_id"])
        assert len(set((await digests(stack, customer, client)).values())) == 1
        for svc in stack.services.values():
            page = await client.get(f"{svc.url}/v1/customers/agent:{agents[0]}/timeline")
            assert page.status_code == 404 or page.json()["events"] == [], (svc.name, page.text)


async def test_away_stops_new_assignments_and_offline_hands_the_cases_back(stack: Stack) -> None:
    url = stack.services["case"].url
    team = f"team-{uuid.uuid4().hex[:8]}"
    ana, ben = f"{team}-ana", f"{team}-ben"
    supervisor = (await make_key(stack, "away supervisor", ["supervisor"], readers=["case"]))["key"]
    ana_key = (await make_key(stack, ana, ["agent"], readers=["case"]))["key"]  # an agent's key: named as the agent
    async with (
        api_client(timeout=20) as client,
        api_client(supervisor, timeout=20) as sup,
        api_client(ana_key, timeout=20) as as_ana,
    ):
        for agent_id in (ana, ben):
            r = await sup.put(f"{url}/v1/agents/{agent_id}", json={"name": agent_id, "teams": [team], "capacity": 2})
            assert r.status_code == 201, r.text
        ana_online = await as_ana.put(f"{url}/v1/agents/{ana}/status", json={"status": "online"})
        assert ana_online.status_code == 200, ana_online.text
        not_hers = await as_ana.put(f"{url}/v1/agents/{ben}/status", json={"status": "online"})
        assert not_hers.status_code == 403 and not_hers.json()["error"] == "forbidden"
        assert (await sup.put(f"{url}/v1/agents/{ben}/status", json={"status": "online"})).status_code == 200
        customer = await known_customer(stack, client)
        await open_case(client, url, customer, team)
        await open_case(client, url, customer, team)
        q = await queue_when(client, url, team, assigned=2, waiting=0)
        assert sorted(o["owner"] for o in q["owners"]) == [ana, ben]  # least loaded first: one each

        assert (await as_ana.put(f"{url}/v1/agents/{ana}/status", json={"status": "away"})).status_code == 200
        await open_case(client, url, customer, team)
        q = await queue_when(client, url, team, assigned=3, waiting=0)
        assert {o["owner"]: len(o["cases"]) for o in q["owners"]} == {ana: 1, ben: 2}  # away: ana got none
        fourth = await open_case(client, url, customer, team)
        await queue_when(client, url, team, assigned=3, waiting=1)  # ana away, ben full: it waits

        offline = await as_ana.put(f"{url}/v1/agents/{ana}/status", json={"status": "offline"})
        assert offline.status_code == 200, offline.text
        [handed_back] = offline.json()["handed_back"]
        q = await queue_when(client, url, team, assigned=2, waiting=2)
        assert {c["case_id"] for c in q["unassigned"]} == {handed_back, fourth["case_id"]}
        history = (await client.get(f"{url}/v1/cases/{handed_back}")).json()["history"]
        assert history[-1]["type"] == "crm.case.unassigned.v1"
        assert (history[-1]["data"]["reason"], history[-1]["data"]["previous_owner"]) == ("agent_offline", ana)

        more = await sup.put(f"{url}/v1/agents/{ben}", json={"name": "Ben", "teams": [team], "capacity": 4})
        assert more.status_code == 200 and more.json()["load"] == 2
        q = await queue_when(client, url, team, assigned=4, waiting=0)
        assert [o["owner"] for o in q["owners"]] == [ben]


async def test_agent_routes_refuse_bad_input_with_reasons(stack: Stack) -> None:
    url = stack.services["case"].url
    async with api_client(timeout=20) as admin:
        bad = [
            ("/v1/agents/ana", {"name": "Ana", "teams": ["t"], "capacity": -1}, "capacity"),
            ("/v1/agents/ana", {"name": "Ana", "teams": [], "capacity": 1}, "teams"),
            ("/v1/agents/ana", {"name": "Ana", "teams": ["t"], "capacity": 1, "skills": ["magic"]}, "skills.0"),
            ("/v1/agents/ana", {"name": "Ana", "teams": ["t"], "capacity": 1, "boss": True}, "boss"),
            ("/v1/agents/ana/status", {"status": "busy"}, "status"),
        ]
        for path, body, field in bad:
            r = await admin.put(url + path, json=body)
            assert r.status_code == 422, (path, body, r.text)
            assert r.json()["error"] == "validation_failed" and field in [e["field"] for e in r.json()["errors"]]
        spaced = await admin.put(f"{url}/v1/agents/a%20b", json={"name": "A", "teams": ["t"], "capacity": 1})
        assert spaced.status_code == 422 and spaced.json()["error"] == "validation_failed"
        unknown = await admin.put(f"{url}/v1/agents/nobody-{uuid.uuid4().hex[:6]}/status", json={"status": "online"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "agent_not_found"
        assert (await admin.get(f"{url}/v1/agents", params={"status": "busy"})).status_code == 422
        assert (await admin.get(f"{url}/v1/queues/t", params={"limit": 0})).status_code == 422


async def test_two_case_instances_never_assign_one_case_twice(stack: Stack) -> None:
    """A second case process beside the stack's: both run assignment rounds on one database while
    hundreds of cases arrive; each case is assigned once, and no agent past capacity."""
    case = stack.services["case"]
    second = ServiceProcess("case", free_port(), dict(case.env), stack.logs / "case-second.log")
    second.env["HTTP_PORT"] = str(second.port)
    second.start()
    team = f"team-{uuid.uuid4().hex[:8]}"
    agents = [f"{team}-{n}" for n in range(10)]
    try:
        await asyncio.to_thread(second.wait_ready, 60)
        async with api_client(timeout=20) as client:
            for n, agent_id in enumerate(agents):  # registered through one instance or the other
                url = (case.url, second.url)[n % 2]
                r = await client.put(
                    f"{url}/v1/agents/{agent_id}", json={"name": agent_id, "teams": [team], "capacity": 25}
                )
                assert r.status_code == 201, r.text
                assert (
                    await client.put(f"{url}/v1/agents/{agent_id}/status", json={"status": "online"})
                ).status_code == 200
            customer = await known_customer(stack, client)
            for n in range(300):
                await open_case(client, (case.url, second.url)[n % 2], customer, team)
            await queue_when(client, case.url, team, assigned=250, waiting=50)
        conn = await asyncpg.connect(stack.postgres.dsn("crm_case"))
        try:
            rows = await conn.fetch(
                "SELECT e.stream_id, count(*) AS n FROM events e JOIN cases c ON e.stream_id = 'case-' || c.case_id"
                " WHERE c.team = $1 AND e.type = 'crm.case.assigned.v1' GROUP BY e.stream_id",
                team,
            )
            loads = await conn.fetch(
                "SELECT owner, count(*) AS n FROM cases WHERE team = $1 AND owner IS NOT NULL GROUP BY owner", team
            )
        finally:
            await conn.close()
        assert len(rows) == 250 and {r["n"] for r in rows} == {1}
        assert sorted(r["n"] for r in loads) == [25] * 10
    finally:
        second.stop()
