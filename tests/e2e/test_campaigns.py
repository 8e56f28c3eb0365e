"""Campaigns on the real stack: notification's campaign API (create, validation, retries and
conflicts, listing, pause/resume/cancel) behind a key with the `campaigns` scope."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from crmtools.devstack import Stack

from tests.conftest import api_client
from tests.e2e.helpers import make_key


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Spring offer",
        "audience": {"segment": "vip", "region": "DE"},
        "purpose": "marketing",
        "templates": {
            "en": {"subject": "{campaign_name}", "body": "Hello {customer_id}"},
            "de": {"subject": "Frühlingsangebot", "body": "Hallo {customer_id}"},
        },
        "send_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    body.update(changes)
    return body


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"{url}/v1/campaigns", json=body)


def _fields(r: httpx.Response) -> list[str]:
    assert r.status_code == 422, r.text
    return [e["field"] for e in r.json()["errors"]]


async def test_campaigns_are_created_once_and_refused_with_reasons(stack: Stack) -> None:
    url = stack.services["notification"].url
    key = (await make_key(stack, "campaign manager", ["campaigns"], readers=["notification"]))["key"]
    agent = (await make_key(stack, "campaign agent", ["agent"], readers=["notification"]))["key"]
    async with api_client(key, timeout=20) as client, api_client(agent, timeout=20) as agent_client:
        forbidden = await _post(agent_client, url, _body())
        assert forbidden.status_code == 403, forbidden.text

        campaign_id = f"spring-{uuid.uuid4().hex[:8]}"
        first = _body(campaign_id=campaign_id)
        made = await _post(client, url, first)
        assert made.status_code == 201, made.text
        out = made.json()
        assert (out["campaign_id"], out["status"], out["audience_size"]) == (campaign_id, "scheduled", None)
        assert out["counts"]["suppressed"] == {} and out["counts"]["sent"] == 0
        other = await _post(client, url, _body(campaign_id=campaign_id, name="Autumn offer"))
        assert other.status_code == 409 and other.json()["error"] == "conflict"

        # The same id and body: the same campaign (200, the same answer), not a second one.
        retried = await _post(client, url, first)
        assert retried.status_code == 200, retried.text
        assert retried.json() == {**out, "updated_at": retried.json()["updated_at"]}

        assert _fields(await _post(client, url, _body(templates={}))) == ["templates"]
        unknown = _body(templates={"en": {"subject": "Hi {first_name}", "body": "x"}})
        assert _fields(await _post(client, url, unknown)) == ["templates.en.subject"]
        past = _body(send_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
        assert _fields(await _post(client, url, past)) == ["send_at"]
        assert _fields(await _post(client, url, _body(audience={"segment": "nobody"}))) == ["audience.segment"]
        assert _fields(await _post(client, url, _body(audience={"shoe_size": 42}))) == ["audience.shoe_size"]

        missing = await client.get(f"{url}/v1/campaigns/no-such-campaign")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_campaigns_are_listed_in_pages_and_paused_resumed_cancelled(stack: Stack) -> None:
    url = stack.services["notification"].url
    async with api_client(timeout=20) as client:  # admin may do what the campaigns scope does
        ids = []
        for _ in range(3):
            r = await _post(client, url, _body())
            assert r.status_code == 201, r.text
            ids.append(r.json()["campaign_id"])
        seen: list[str] = []
        before: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"before": before} if before else {})}
            page = (await client.get(f"{url}/v1/campaigns", params=params)).json()
            seen += [c["campaign_id"] for c in page["campaigns"]]
            before = page["next_before"]
            if before is None:
                break
        assert [i for i in seen if i in ids] == list(reversed(ids))  # newest first, each once
        bad_cursor = await client.get(f"{url}/v1/campaigns", params={"before": "not-a-cursor"})
        assert bad_cursor.status_code == 422

        campaign_id = ids[0]
        paused = await client.post(f"{url}/v1/campaigns/{campaign_id}:pause")
        assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
        twice = await client.post(f"{url}/v1/campaigns/{campaign_id}:pause")
        assert twice.status_code == 409
        assert (twice.json()["error"], twice.json()["allowed"]) == ("illegal_transition", ["cancel", "resume"])
        resumed = await client.post(f"{url}/v1/campaigns/{campaign_id}:resume")
        assert resumed.json()["status"] == "scheduled"  # its audience has not come yet
        cancelled = await client.post(f"{url}/v1/campaigns/{campaign_id}:cancel")
        assert cancelled.json()["status"] == "cancelled"
        late = await client.post(f"{url}/v1/campaigns/{campaign_id}:resume")
        assert late.status_code == 409 and late.json()["allowed"] == []
        unknown = await client.post(f"{url}/v1/campaigns/no-such-campaign:cancel")
        assert unknown.status_code == 404
