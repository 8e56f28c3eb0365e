"""Manual merge and unmerge end to end (issue 29, docs/merge-and-unmerge.md): the four services as
real processes. Two customers, each with interactions, a case and consent of their own; an agent
merges them (the merged id answers 308 everywhere, one timeline) and then undoes it: the merged id
answers for itself again in every service, both timelines are what they were with equal digests
in all four services, consent is worked out again for both, and the audit log names the agent."""

import uuid
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client, eventually
from tests.e2e.conftest import digests, timeline_ids
from tests.e2e.helpers import interaction_body, make_key
from tests.e2e.test_operations import crm

pytestmark = pytest.mark.e2e


def mail(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


async def post(client: httpx.AsyncClient, stack: Stack, email: str, kind: str) -> dict[str, Any]:
    r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=interaction_body(email, kind))
    assert r.status_code == 202, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def cases_of(client: httpx.AsyncClient, stack: Stack, customer_id: str) -> list[str]:
    r = await client.get(f"{stack.services['case'].url}/v1/cases", params={"customer_id": customer_id})
    assert r.status_code == 200, r.text
    return sorted(c["case_id"] for c in r.json()["cases"])


async def converged(client: httpx.AsyncClient, stack: Stack, customer_id: str, must_have: set[str]) -> tuple[int, str]:
    """The one (count, digest) all four services agree on, once each timeline holds `must_have`."""

    async def probe() -> tuple[int, str] | None:
        for svc in stack.services.values():
            r = await client.get(f"{svc.url}/v1/customers/{customer_id}/timeline/digest", follow_redirects=False)
            if r.status_code != 200:
                return None
        if not must_have <= set(await timeline_ids(stack.services["intake"].url, customer_id)):
            return None
        d = await digests(stack, customer_id, client)
        return next(iter(d.values())) if len(set(d.values())) == 1 else None

    return await eventually(probe, timeout_s=60, what=f"equal digests of {customer_id} in all four services")


async def opened_cases(client: httpx.AsyncClient, url: str, customer_id: str) -> set[str]:
    """The cases whose opening is on the customer's timeline (first 500 events)."""
    r = await client.get(f"{url}/v1/customers/{customer_id}/timeline", params={"limit": 500})
    assert r.status_code == 200, r.text
    return {e["data"]["case_id"] for e in r.json()["events"] if e["type"] == "crm.case.opened.v1"}


async def b_address_on(client: httpx.AsyncClient, url: str, customer_id: str) -> list[str]:
    """The identifier a manual merge named and the one an unmerge gave back, as the timeline reads them."""
    r = await client.get(f"{url}/v1/customers/{customer_id}/timeline", params={"limit": 500})
    events = {e["type"]: e["data"] for e in r.json()["events"]}
    return [
        events["crm.customer.merged.v1"]["linked_by"]["value"],
        events["crm.customer.unmerged.v1"]["identifiers"][0]["value"],
    ]


async def subjects(client: httpx.AsyncClient, url: str, customer_id: str) -> set[str]:
    """Whose ids the events on the customer's timeline were made under (first 500)."""
    r = await client.get(f"{url}/v1/customers/{customer_id}/timeline", params={"limit": 500})
    assert r.status_code == 200, r.text
    return {e["subject"] for e in r.json()["events"]}


async def consent(client: httpx.AsyncClient, stack: Stack, customer_id: str) -> dict[str, set[tuple[str, str, bool]]]:
    """The customer's consent as intake and notification hold it ((purpose, channel, granted), "*": every channel)."""
    r = await client.get(f"{stack.services['intake'].url}/v1/customers/{customer_id}", follow_redirects=False)
    assert r.status_code == 200, r.text
    intake = {(c["purpose"], c["channel"] or "*", c["granted"]) for c in r.json()["consent"]}
    r = await client.get(f"{stack.services['notification'].url}/v1/admin/customers/{customer_id}/notifications")
    assert r.status_code == 200, r.text
    notification = {(c["purpose"], c["channel"], c["granted"]) for c in r.json()["consent"]}
    return {"intake": intake, "notification": notification}


async def statuses(client: httpx.AsyncClient, stack: Stack, customer_id: str) -> dict[str, int]:
    """What each service answers for the customer's timeline (and analytics for its insights)."""
    out = {}
    for name, svc in stack.services.items():
        r = await client.get(f"{svc.url}/v1/customers/{customer_id}/timeline", follow_redirects=False)
        out[name] = r.status_code
    r = await client.get(
        f"{stack.services['analytics'].url}/v1/customers/{customer_id}/insights", follow_redirects=False
    )
    out["insights"] = r.status_code
    r = await client.get(f"{stack.services['intake'].url}/v1/customers/{customer_id}", follow_redirects=False)
    out["profile"] = r.status_code
    return out


async def test_an_agent_merges_two_customers_and_undoes_it_everywhere(stack: Stack) -> None:
    agent = await make_key(stack, "merging agent", ["agent"])
    intake = stack.services["intake"].url
    a_mail, b_mail = mail("ann"), mail("bob")
    async with api_client(timeout=30) as admin, api_client(agent["key"], timeout=30) as client:
        # Two customers, each with a message and a complaint (which opens a case), and consent.
        a = (await post(client, stack, a_mail, "message"))["customer_id"]
        b = (await post(client, stack, b_mail, "message"))["customer_id"]
        own = {a: {(await post(client, stack, a_mail, "complaint"))["event_id"]},
               b: {(await post(client, stack, b_mail, "complaint"))["event_id"]}}  # fmt: skip
        for cid, consents in (
            (a, [{"purpose": "marketing", "granted": True}]),
            (
                b,
                [{"purpose": "marketing", "granted": False}, {"purpose": "service", "channel": "sms", "granted": True}],
            ),
        ):
            r = await client.put(f"{intake}/v1/customers/{cid}/consent", json={"consents": consents})
            assert r.status_code == 200, r.text
            own[cid] |= set(r.json()["event_ids"])
        case_a = await eventually(lambda: _one(cases_of(client, stack, a)), what="a's complaint opens a case")
        case_b = await eventually(lambda: _one(cases_of(client, stack, b)), what="b's complaint opens a case")
        before = {cid: await converged(client, stack, cid, own[cid]) for cid in (a, b)}
        ids_before = {cid: set(await timeline_ids(intake, cid)) for cid in (a, b)}
        assert not ids_before[a] & ids_before[b]

        # Refused merges: into itself, an unknown id, from a body that is not an object of ours.
        r = await client.post(f"{intake}/v1/customers/{a}/merge", json={"merged_id": a})
        assert (r.status_code, r.json()["error"]) == (409, "same_customer")
        r = await client.post(f"{intake}/v1/customers/{a}/merge", json={"merged_id": "no-such-customer"})
        assert (r.status_code, r.json()["errors"][0]["field"]) == (404, "body.merged_id")
        r = await client.post(f"{intake}/v1/customers/{a}/unmerge", json={"merged_id": b})
        assert (r.status_code, r.json()["error"]) == (409, "not_merged")

        # The merge: b answers 308 everywhere, its events are on a's one timeline.
        r = await client.post(f"{intake}/v1/customers/{a}/merge", json={"merged_id": b})
        assert r.status_code == 200, r.text
        merge_event = r.json()["event_ids"][0]
        assert (r.json()["survivor_id"], r.json()["merged_id"]) == (a, b)
        r = await client.post(f"{intake}/v1/customers/{a}/merge", json={"merged_id": b})
        assert (r.status_code, r.json()["error"]) == (409, "already_merged")
        r = await client.post(f"{intake}/v1/customers/{b}/merge", json={"merged_id": a}, follow_redirects=False)
        assert r.status_code == 308 and r.headers["location"].endswith(f"/v1/customers/{a}/merge")

        async def merged_everywhere() -> bool | None:
            s = await statuses(client, stack, b)
            return True if set(s.values()) == {308} else None

        await eventually(merged_everywhere, timeout_s=60, what="b answers 308 in every service")
        together = await converged(client, stack, a, ids_before[a] | ids_before[b] | {merge_event})
        assert together[0] > before[a][0] + before[b][0]
        for svc in stack.services.values():  # both cases are on the one timeline
            assert await opened_cases(client, svc.url, a) == {case_a, case_b}
        merged_consent = await consent(admin, stack, a)
        assert merged_consent["intake"] == {("marketing", "*", False), ("service", "sms", True)}

        # Refused unmerges: an identifier that is not the survivor's now.
        stranger = [{"kind": "email", "value": mail("nobody")}]
        r = await client.post(f"{intake}/v1/customers/{a}/unmerge", json={"merged_id": b, "identifiers": stranger})
        assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "body.identifiers.0")

        # The unmerge: b's address goes back with it.
        r = await client.post(
            f"{intake}/v1/customers/{a}/unmerge",
            json={"merged_id": b, "identifiers": [{"kind": "email", "value": b_mail}], "reason": "two people"},
        )
        assert r.status_code == 200, r.text
        unmerge_event = r.json()["event_ids"][0]

        async def unmerged_everywhere() -> bool | None:
            s = await statuses(client, stack, b)
            return True if set(s.values()) == {200} else None

        await eventually(unmerged_everywhere, timeout_s=60, what="b answers for itself in every service")
        after_a = await converged(client, stack, a, ids_before[a] | {merge_event, unmerge_event})
        after_b = await converged(client, stack, b, ids_before[b])
        assert after_b[0] >= before[b][0] and after_a[0] > before[a][0]  # a: plus the merge and the unmerge
        for svc in stack.services.values():  # each timeline holds its own customer's events only
            assert await subjects(client, svc.url, a) == {a}
            assert await subjects(client, svc.url, b) == {b}
            assert await opened_cases(client, svc.url, a) == {case_a}
            assert await opened_cases(client, svc.url, b) == {case_b}
        ids_a = set(await timeline_ids(intake, a))
        assert not ids_a & ids_before[b] and ids_before[a] <= ids_a
        assert await cases_of(client, stack, a) == [case_a]
        assert await cases_of(client, stack, b) == [case_b]

        # Identifiers: b's address finds b again; a keeps its own.
        r = await client.get(f"{intake}/v1/customers", params={"email": b_mail})
        assert [c["customer_id"] for c in r.json()["items"]] == [b]
        r = await client.get(f"{intake}/v1/customers/{a}")
        assert [i["value"] for i in r.json()["identifiers"]] == [a_mail] and r.json()["merged_ids"] == []

        # Consent worked out again: each its own answers, in intake and in notification.
        async def consent_back() -> bool | None:
            ca, cb = await consent(admin, stack, a), await consent(admin, stack, b)
            ok = ca["intake"] == ca["notification"] == {("marketing", "*", True)} and cb["intake"] == cb[
                "notification"
            ] == {("marketing", "*", False), ("service", "sms", True)}
            return True if ok else None

        await eventually(consent_back, timeout_s=60, what="consent of both worked out again")

        # Analytics answers for both, each with its own two interactions and one open case.
        async def insights_back() -> bool | None:
            out = []
            for cid in (a, b):
                r = await client.get(f"{stack.services['analytics'].url}/v1/customers/{cid}/insights")
                if r.status_code != 200:
                    return None
                out.append((r.json()["rfm"]["frequency"], r.json()["open_cases"]))
            return True if out == [(2, 1), (2, 1)] else None

        await eventually(insights_back, timeout_s=60, what="analytics' insights of both folded again")

        # The audit log names the agent, under both customers, for the merge and the unmerge.
        async def audited() -> bool | None:
            found = {}
            for cid in (a, b):
                r = await admin.get(f"{intake}/v1/admin/audit", params={"key_id": agent["key_id"], "customer_id": cid})
                found[cid] = {(x["route"], x["status"]) for x in r.json()["items"]}
            want = {("/v1/customers/{customer_id}/merge", 200), ("/v1/customers/{customer_id}/unmerge", 200)}
            return True if all(want <= rows for rows in found.values()) else None

        await eventually(audited, timeout_s=30, what="audit rows of the merge and unmerge for both customers")

        # A replay of case's timeline from the log applies the merge and then the unmerge: case's
        # rebuilt timelines agree with the other three's again, b's and a's apart.
        result = crm(stack, "replay", "case")
        assert result.returncode == 0, result.stderr
        assert (await statuses(client, stack, b))["case"] == 200
        for cid in (a, b):
            await converged(client, stack, cid, ids_before[cid])
            assert await subjects(client, stack.services["case"].url, cid) == {cid}

        # b's address in a's merge and unmerge events is sealed under b's key: erasing b erases it.
        assert await b_address_on(client, intake, a) == [b_mail, b_mail]
        r = await admin.post(f"{intake}/v1/customers/{b}/erasure")
        assert r.status_code == 202, r.text

        async def erased() -> bool | None:
            return True if await b_address_on(client, intake, a) == ["[erased]", "[erased]"] else None

        await eventually(erased, what="b's address in a's events reads as erased")


async def _one(listing: Any) -> str | None:
    cases = await listing
    return cases[0] if cases else None
