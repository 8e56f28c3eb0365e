"""The agent's day, replies reach the case (issue 25), the four services as real processes: the
customer's plain message opens a pending case again with its SLA clock running, an answer soon
after the resolution reopens the case, a resolved case nobody answers closes by itself (and
intake's timeline shows it), and an unanswered answer breaches the next-reply target."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client, eventually, running_stack
from tests.e2e.conftest import timeline_ids
from tests.e2e.test_case import command, complaint_case, interaction

pytestmark = pytest.mark.e2e

# Long enough that an answer posted right after a resolution reaches case well before the close.
AUTO_CLOSE_AFTER_S = 15
REPLIES_ENV = {
    "CASE_BUSINESS_CALENDAR": '"24x7"',
    "CASE_REOPEN_WINDOW_S": "3600",
    "CASE_AUTO_CLOSE_AFTER_S": str(AUTO_CLOSE_AFTER_S),
    "CASE_TIMER_POLL_INTERVAL_MS": "200",
    "CASE_SLA_NEXT_REPLY": '{"urgent": 2}',  # only urgent cases: the other tests' cases have none
}


@pytest.fixture(scope="module")
def replies_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("replies-stack"), REPLIES_ENV) as s:
        yield s


async def worked_case(stack: Stack, client: httpx.AsyncClient, *steps: str) -> tuple[str, str, int]:
    """A complaint's case taken up by an agent and moved through `steps`: customer, case, version."""
    url = stack.services["case"].url
    accepted, listed = await complaint_case(stack, client)
    version = listed["version"]
    for status in ("open", *steps):
        r = await command(client, url, listed["case_id"], "status", version, status=status)
        assert r.status_code == 200, r.text
        version = r.json()["version"]
    return accepted["customer_id"], listed["case_id"], version


async def customer_says(stack: Stack, client: httpx.AsyncClient, customer: str, text: str) -> str:
    """The customer's plain message by email; its event id."""
    body = interaction({"id": customer}, "message", channel="email", content=text)
    r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=body)
    assert r.status_code == 202, r.text
    event_id: str = r.json()["event_id"]
    return event_id


async def case_once(stack: Stack, client: httpx.AsyncClient, case_id: str, status: str) -> dict[str, Any]:
    url = stack.services["case"].url

    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"{url}/v1/cases/{case_id}")).json()
        return body if body["status"] == status else None

    return await eventually(reached, timeout_s=60, what=f"the case becomes {status}")


def last_status_change(case: dict[str, Any]) -> tuple[str, str, str | None]:
    d = [h["data"] for h in case["history"] if h["type"] == "crm.case.status_changed.v1"][-1]
    return d["from_status"], d["to_status"], d["reason"]


async def test_a_customers_message_opens_the_pending_case_and_its_sla_clock_runs_again(
    replies_stack: Stack,
) -> None:
    url = replies_stack.services["case"].url
    async with api_client(timeout=10) as client:
        customer, case_id, _ = await worked_case(replies_stack, client, "pending")
        paused = (await client.get(f"{url}/v1/cases/{case_id}")).json()
        assert paused["sla"]["clock"] == "paused" and paused["sla"]["resolution"]["due_at"] is None

        message = await customer_says(replies_stack, client, customer, "here is the photo you asked for")
        reopened = await case_once(replies_stack, client, case_id, "open")
        assert message in reopened["interactions"]
        assert last_status_change(reopened) == ("pending", "open", "customer_replied")
        assert reopened["sla"]["clock"] == "running" and reopened["sla"]["resolution"]["due_at"] is not None


async def test_an_answer_soon_after_the_resolution_reopens_the_case(replies_stack: Stack) -> None:
    async with api_client(timeout=10) as client:
        customer, case_id, _ = await worked_case(replies_stack, client, "resolved")
        message = await customer_says(replies_stack, client, customer, "it broke again")
        reopened = await case_once(replies_stack, client, case_id, "open")
        assert message in reopened["interactions"] and reopened["resolved_at"] is None
        assert last_status_change(reopened) == ("resolved", "open", "customer_replied")
        # The answer joined the case: no second case was opened for it.
        listed = await client.get(f"{replies_stack.services['case'].url}/v1/cases", params={"customer_id": customer})
        assert [c["case_id"] for c in listed.json()["cases"]] == [case_id]


async def test_a_resolved_case_nobody_answers_closes_by_itself(replies_stack: Stack) -> None:
    async with api_client(timeout=10) as client:
        customer, case_id, _ = await worked_case(replies_stack, client, "resolved")
        closed = await case_once(replies_stack, client, case_id, "closed")
        assert last_status_change(closed) == ("resolved", "closed", "auto_closed")
        assert closed["closed_at"] is not None
        close_id = closed["history"][-1]["event_id"]

        async def on_intake_timeline() -> bool | None:
            ids = await timeline_ids(replies_stack.services["intake"].url, customer)
            return True if close_id in ids else None

        await eventually(on_intake_timeline, what="the auto close on intake's timeline")


async def test_an_unanswered_customer_answer_breaches_the_next_reply_target_until_an_agent_answers(
    replies_stack: Stack,
) -> None:
    url = replies_stack.services["case"].url
    async with api_client(timeout=10) as client:
        customer, case_id, version = await worked_case(replies_stack, client)
        r = await command(client, url, case_id, "priority", version, priority="urgent")
        assert r.status_code == 200, r.text
        message = await customer_says(replies_stack, client, customer, "any news?")

        async def breached() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(f"{url}/v1/cases/{case_id}")).json()
            found = [h for h in body["history"] if h["type"] == "crm.case.reply_sla_breached.v1"]
            return found[0]["data"] if found else None

        breach = await eventually(breached, what="the next-reply breach")
        assert breach["reply_to"] == message and breach["priority"] == "urgent"

        # The agent's answer, recorded at intake naming the case, links to it by itself.
        body = interaction({"id": customer}, "message", channel="email", content="on our way")
        body = {**body, "direction": "outbound", "metadata": {"case_id": case_id}}
        r = await client.post(f"{replies_stack.services['intake'].url}/v1/interactions", json=body)
        assert r.status_code == 202, r.text
        answer_id = r.json()["event_id"]

        async def linked() -> bool | None:
            case = (await client.get(f"{url}/v1/cases/{case_id}")).json()
            return True if answer_id in case["interactions"] else None

        await eventually(linked, what="the agent's answer linked to the case")
