"""Identity trust end to end (issue 23 part 4, docs/product.md §14, docs/identity-trust.md): intake, case and
notification as real processes on the embedded stack, a real SMTP server in the test.

With only a `channel:web` key an attacker could attach their address to a victim, merge two
victims, and receive the victim's next message. Each attack here is refused its effect: the
address stays claimed, nothing merges (a suggestion waits for an agent), and the victim's message
goes to the victim's own address. The same holds for a batch, external ids, a merged id and racing
requests; agents accept or reject suggestions and verify identifiers.
"""

import asyncio
import hashlib
import hmac
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client, eventually, running_stack, smtp_env
from tests.e2e.helpers import make_key
from tests.notification.receivers import SmtpServer

pytestmark = pytest.mark.e2e
SERVICES = ("intake", "case", "notification")
WEB_IDENTITY_SECRET = "web-widget-identity-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    env = {**smtp_env(smtp), "IDENTITY_HMAC_SECRETS": f'{{"web": "{WEB_IDENTITY_SECRET}"}}'}
    with running_stack(tmp_path_factory.mktemp("trust-stack"), env, SERVICES) as s:
        yield s


@pytest.fixture(scope="module")
async def keys(stack: Stack) -> dict[str, str]:
    """A channel key (the attacker's), an agent's key and a key allowed to verify identities."""
    return {
        "web": (await make_key(stack, "web widget", ["channel:web"], SERVICES))["key"],
        "agent": (await make_key(stack, "agent", ["agent"], SERVICES))["key"],
        "verifier": (await make_key(stack, "verified sign-in", ["channel:web", "identity:verify"], SERVICES))["key"],
    }


def mail(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def body(
    customer: dict[str, Any], kind: str = "message", direction: str = "inbound", case_type: str | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"case_type": case_type} if case_type else {},
        "customer": customer,
        "channel": "web",
        "direction": direction,
        "kind": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": "hello",
    }


async def new_customers(stack: Stack, key: str, *names: str) -> list[tuple[str, str]]:
    """A customer for each name, each with a new address of its own: (address, customer id) each,
    oldest first."""
    made = []
    for name in names:
        address = mail(name)
        made.append((address, (await post(stack, key, {"email": address}))["customer_id"]))
    return made


async def post(stack: Stack, key: str, customer: dict[str, Any], **kw: Any) -> dict[str, Any]:
    async with api_client(key, timeout=20) as client:
        r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=body(customer, **kw))
    assert r.status_code == 202, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def customer(stack: Stack, customer_id: str) -> httpx.Response:
    async with api_client(timeout=20) as client:
        return await client.get(f"{stack.services['intake'].url}/v1/customers/{customer_id}", follow_redirects=False)


async def trust(stack: Stack, customer_id: str) -> dict[str, str]:
    r = await customer(stack, customer_id)
    assert r.status_code == 200, r.text
    return {i["value"]: i["trust"] for i in r.json()["identifiers"]}


async def suggestions(stack: Stack, key: str, **params: str) -> list[dict[str, Any]]:
    async with api_client(key, timeout=20) as client:
        r = await client.get(f"{stack.services['intake'].url}/v1/merge-suggestions", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def case_opened_mails(
    stack: Stack, smtp: SmtpServer, key: str, customer: dict[str, Any], case_type: str = "complaint", opened: int = 1
) -> list[str]:
    """Post a complaint for the customer that opens a case of `case_type`; the customer is told by
    email. Returns, once `opened` case-opened messages are decided, where each went (oldest first):
    the address, or why no email was sent."""
    answer = await post(stack, key, customer, kind="complaint", case_type=case_type)
    cid = answer["customer_id"]
    async with api_client(timeout=20) as client:

        async def decided() -> list[str] | None:
            r = await client.get(f"{stack.services['notification'].url}/v1/notifications", params={"customer_id": cid})
            assert r.status_code == 200, r.text
            done = [n for n in r.json()["items"] if n["rule"] == "case_opened"
                    and n["status"] in ("sent", "delivered", "suppressed", "failed")]  # fmt: skip
            if len(done) < opened:
                return None
            out = []
            for n in sorted(done, key=lambda n: n["created_at"]):
                found = smtp.with_header("X-CRM-Notification-Id", n["notification_id"])
                if n["status"] in ("sent", "delivered") and not found:
                    return None
                out.append(str(found[0]["To"]) if found else f"no email: {n['status']} {n['reason']}")
            return out

        return await eventually(decided, timeout_s=60, what="the case-opened messages are decided and sent")


async def test_a_claimed_address_gets_none_of_the_victims_messages(
    stack: Stack, smtp: SmtpServer, keys: dict[str, str]
) -> None:
    victim_mail, attacker_mail = mail("victim"), mail("mallory")
    victim = (await post(stack, keys["web"], {"email": victim_mail}))["customer_id"]
    # The attack: the victim's id with the attacker's address, from a channel key.
    answer = await post(stack, keys["web"], {"id": victim, "email": attacker_mail})
    assert answer["customer_id"] == victim
    # The newest address would have been the attacker's: the message goes to the victim's own.
    assert await case_opened_mails(stack, smtp, keys["web"], {"id": victim}) == [victim_mail]
    assert not [m for m in smtp.messages if m["To"] == attacker_mail]
    # The victim wrote in from their address themselves: it is theirs; the attacker's is only claimed.
    assert (await trust(stack, victim)) == {victim_mail: "claimed", attacker_mail: "claimed"}


async def test_two_victims_in_one_claim_are_not_merged_but_suggested(stack: Stack, keys: dict[str, str]) -> None:
    (_, first), (second_mail, second) = await new_customers(stack, keys["web"], "first", "second")
    answer = await post(stack, keys["web"], {"email": second_mail, "id": first})
    assert answer["customer_id"] == first
    assert (await customer(stack, second)).status_code == 200  # not merged: no redirect
    assert (await customer(stack, first)).json()["merged_ids"] == []
    [suggestion] = await suggestions(stack, keys["agent"], customer_id=second)
    assert (suggestion["survivor_id"], suggestion["merged_id"], suggestion["status"]) == (first, second, "pending")
    assert suggestion["linked_by"]["value"] == second_mail
    async with api_client(timeout=20) as client:
        for cid in (first, second):  # on both timelines, in every service

            async def suggested(cid: str = cid) -> bool | None:
                for service in SERVICES:
                    url = stack.services[service].url
                    r = await client.get(f"{url}/v1/customers/{cid}/timeline", params={"limit": 50})
                    if "crm.customer.merge_suggested.v1" not in {e["type"] for e in r.json()["events"]}:
                        return None
                return True

            await eventually(suggested, what="the suggestion is on both timelines everywhere")


async def test_an_agent_accepts_a_suggestion_and_the_customers_merge(stack: Stack, keys: dict[str, str]) -> None:
    (_, older), (b_mail, younger) = await new_customers(stack, keys["web"], "a", "b")
    await post(stack, keys["web"], {"email": b_mail, "id": older})
    [suggestion] = await suggestions(stack, keys["agent"], customer_id=older)
    url = f"{stack.services['intake'].url}/v1/merge-suggestions/{suggestion['suggestion_id']}"
    async with api_client(keys["web"], timeout=20) as client:
        assert (await client.post(f"{url}:accept")).status_code == 403  # a channel key decides nothing
    async with api_client(keys["agent"], timeout=20) as client:
        r = await client.post(f"{url}:accept")
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["survivor_id"], r.json()["merged_id"]) == ("accepted", older, younger)
        again = await client.post(f"{url}:reject")
        assert (again.status_code, again.json()["error"]) == (409, "suggestion_decided")
        missing = await client.post(f"{stack.services['intake'].url}/v1/merge-suggestions/nope:accept")
        assert (missing.status_code, missing.json()["error"]) == (404, "suggestion_not_found")
    assert (await customer(stack, younger)).status_code == 308
    assert (await customer(stack, older)).json()["merged_ids"] == [younger]
    async with api_client(timeout=20) as client:

        async def merged_everywhere() -> bool | None:
            for service in SERVICES:
                url = stack.services[service].url
                r = await client.get(f"{url}/v1/customers/{older}/timeline", params={"limit": 50})
                types = [e["type"] for e in r.json()["events"]]
                if not {"crm.customer.merged.v1", "crm.customer.merge_suggestion_decided.v1"} <= set(types):
                    return None
            return True

        await eventually(merged_everywhere, what="the merge and the decision are on the timeline everywhere")
        r = await client.get(f"{stack.services['intake'].url}/v1/customers/{older}/timeline", params={"limit": 50})
        merged = next(e for e in r.json()["events"] if e["type"] == "crm.customer.merged.v1")
        assert "accepted merge suggestion" in merged["data"]["reason"]


async def test_a_rejected_suggestion_keeps_them_apart_for_good(stack: Stack, keys: dict[str, str]) -> None:
    (a_mail, older), (b_mail, younger) = await new_customers(stack, keys["web"], "a", "b")
    await post(stack, keys["web"], {"email": a_mail, "id": younger})
    [suggestion] = await suggestions(stack, keys["agent"], customer_id=younger)
    async with api_client(keys["agent"], timeout=20) as client:
        url = f"{stack.services['intake'].url}/v1/merge-suggestions/{suggestion['suggestion_id']}:reject"
        r = await client.post(url)
        assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    await post(stack, keys["web"], {"email": b_mail, "id": older})  # the same pair, claimed again
    assert await suggestions(stack, keys["agent"], customer_id=older) == []
    [rejected] = await suggestions(stack, keys["agent"], customer_id=older, status="rejected")
    assert rejected["suggestion_id"] == suggestion["suggestion_id"]
    assert (await customer(stack, younger)).status_code == 200


async def test_a_batch_of_claims_merges_nothing_and_adds_nothing_trusted(stack: Stack, keys: dict[str, str]) -> None:
    (v1, first), (_, second) = await new_customers(stack, keys["web"], "v1", "v2")
    attacker_mail = mail("mallory")
    items = [body({"id": first, "email": attacker_mail}), body({"email": v1, "external": [
        {"channel": "web", "id": "x"}]}), body({"id": second, "email": v1})]  # fmt: skip
    async with api_client(keys["web"], timeout=20) as client:
        r = await client.post(f"{stack.services['intake'].url}/v1/interactions:batch", json={"items": items})
    assert r.status_code == 202, r.text
    assert [i["customer_id"] for i in r.json()["items"]] == [first, first, second]
    assert (await trust(stack, first))[attacker_mail] == "claimed"
    assert (await customer(stack, second)).status_code == 200
    assert len(await suggestions(stack, keys["agent"], customer_id=second)) == 1


async def test_external_ids_are_claims_too(stack: Stack, keys: dict[str, str]) -> None:
    ext_a, ext_b, attacker_mail = (f"user-{uuid.uuid4().hex[:8]}" for _ in range(3))
    a = (await post(stack, keys["web"], {"external": [{"channel": "web", "id": ext_a}]}))["customer_id"]
    b = (await post(stack, keys["web"], {"external": [{"channel": "web", "id": ext_b}]}))["customer_id"]
    attacker = f"{attacker_mail}@example.com"
    assert (await post(stack, keys["web"], {"external": [{"channel": "web", "id": ext_a}], "email": attacker}))[
        "customer_id"
    ] == a
    assert (await trust(stack, a))[attacker] == "claimed"
    both = [{"channel": "web", "id": ext_a}, {"channel": "web", "id": ext_b}]
    assert (await post(stack, keys["web"], {"external": both}))["customer_id"] == a
    assert (await customer(stack, b)).status_code == 200
    [suggestion] = await suggestions(stack, keys["agent"], customer_id=b)
    assert suggestion["linked_by"] == {"kind": "external", "value": ext_b, "channel": "web"}


async def test_a_merged_id_leads_a_claim_to_the_survivor_as_a_claim(
    stack: Stack, smtp: SmtpServer, keys: dict[str, str]
) -> None:
    (a_mail, older), (b_mail, younger) = await new_customers(stack, keys["verifier"], "a", "b")
    attacker_mail = mail("mallory")
    # A key allowed to verify identities still merges directly.
    merged = await post(stack, keys["verifier"], {"email": a_mail, "id": younger})
    assert merged["customer_id"] == older and (await customer(stack, younger)).status_code == 308
    assert (await trust(stack, older)) == {a_mail: "verified", b_mail: "verified"}
    answer = await post(stack, keys["web"], {"id": younger, "email": attacker_mail})
    assert answer["customer_id"] == older
    assert (await trust(stack, older))[attacker_mail] == "claimed"
    assert await case_opened_mails(stack, smtp, keys["web"], {"id": younger}) in ([a_mail], [b_mail])
    assert not [m for m in smtp.messages if m["To"] == attacker_mail]


async def test_racing_claims_never_merge_and_suggest_once(stack: Stack, keys: dict[str, str]) -> None:
    mails = [mail(f"race{n}") for n in range(3)]
    ids = [(await post(stack, keys["web"], {"email": m}))["customer_id"] for m in mails]
    claims = [{"email": mails[n % 3], "id": ids[(n + 1) % 3]} for n in range(12)]
    await asyncio.gather(*(post(stack, keys["web"], c) for c in claims))
    for cid in ids:
        assert (await customer(stack, cid)).status_code == 200
    found = {frozenset((s["survivor_id"], s["merged_id"])) for cid in ids
             for s in await suggestions(stack, keys["agent"], customer_id=cid)}  # fmt: skip
    assert found == {frozenset((ids[n], ids[(n + 1) % 3])) for n in range(3)}
    assert len(await suggestions(stack, keys["agent"], customer_id=ids[0])) == 2


async def test_an_address_is_reached_only_once_verified_by_an_agent(
    stack: Stack, smtp: SmtpServer, keys: dict[str, str]
) -> None:
    """A customer a channel created by writing to them (outbound) never used the address
    themselves: no message goes there until an agent confirms it."""
    address = mail("outbound")
    cid = (await post(stack, keys["web"], {"email": address}, direction="outbound"))["customer_id"]
    assert (await trust(stack, cid)) == {address: "claimed"}
    assert await case_opened_mails(stack, smtp, keys["web"], {"id": cid}) == ["no email: suppressed no_address"]
    url = f"{stack.services['intake'].url}/v1/customers/{cid}/identifiers:verify"
    async with api_client(keys["web"], timeout=20) as client:
        assert (await client.post(url, json={"email": address})).status_code == 403
    async with api_client(keys["agent"], timeout=20) as client:
        missing = await client.post(url, json={"email": mail("someone-else")})
        assert (missing.status_code, missing.json()["error"]) == (404, "identifier_not_found")
        r = await client.post(url, json={"email": address.upper()})
        assert r.status_code == 200, r.text
        [event_id] = r.json()["event_ids"]
        w = await client.get(
            f"{stack.services['notification'].url}/v1/customers/{cid}/timeline",
            params={"wait_for": event_id, "timeout_ms": 15000},
        )
        assert w.status_code == 200
    assert (await trust(stack, cid)) == {address: "verified"}
    # A second case (another type) opens: its message goes to the address now.
    assert await case_opened_mails(stack, smtp, keys["web"], {"id": cid}, "billing", opened=2) == [
        "no email: suppressed no_address",
        address,
    ]


def signed(lines: list[str]) -> str:
    """What the web front end's back end computes for a reference (docs/identity-trust.md)."""
    return hmac.new(WEB_IDENTITY_SECRET.encode(), "\n".join(sorted(lines)).encode(), hashlib.sha256).hexdigest()


async def test_a_reference_signed_by_the_channels_back_end_is_verified(stack: Stack, keys: dict[str, str]) -> None:
    (a_mail, older), (b_mail, younger) = await new_customers(stack, keys["web"], "signed-a", "signed-b")
    forged = {"email": b_mail, "id": older, "identity_hash": signed([f"email:{a_mail}", f"id:{older}"])}
    async with api_client(keys["web"], timeout=20) as client:
        r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=body(forged))
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {"field": "customer.identity_hash", "reason": "does not match the customer reference"}
    ]
    assert (await customer(stack, younger)).status_code == 200  # a refused signature did nothing
    # Signed by the channel's back end: as from a key with identity:verify. It vouches for the
    # person (older) and a new address of theirs, which is linked verified at once...
    c_mail = mail("signed-c")
    ok = {"email": c_mail, "id": older, "identity_hash": signed([f"email:{c_mail}", f"id:{older}"])}
    assert (await post(stack, keys["web"], ok))["customer_id"] == older
    assert await trust(stack, older) == {a_mail: "claimed", c_mail: "verified"}
    # ...but not for a link somebody claimed: b_mail, claimed on younger, merges nothing.
    claimed_link = {"email": b_mail, "id": older, "identity_hash": signed([f"email:{b_mail}", f"id:{older}"])}
    assert (await post(stack, keys["web"], claimed_link))["customer_id"] == older
    assert (await customer(stack, younger)).status_code == 200
    assert await trust(stack, younger) == {b_mail: "claimed"}
    [suggestion] = await suggestions(stack, keys["agent"], customer_id=younger)
    assert (suggestion["survivor_id"], suggestion["merged_id"]) == (older, younger)
