"""What many end-to-end tests do against a running stack: build an interaction, post it to intake
and wait until the services' timelines have it."""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from crmtools.devstack import Stack

from tests.conftest import api_client


def interaction_body(
    email: str, kind: str = "message", channel: str = "web", content: str = "hello", **fields: Any
) -> dict[str, Any]:
    """A valid inbound interaction from `email`, occurring now; `fields` add to or replace its own."""
    return {
        "customer": {"email": email},
        "channel": channel,
        "direction": "inbound",
        "kind": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": content,
        **fields,
    }


async def wait_applied(
    client: httpx.AsyncClient,
    stack: Stack,
    customer_id: str,
    event_id: str,
    readers: Iterable[str] | None = None,
    timeout_ms: int = 10_000,
) -> dict[str, list[str]]:
    """Once each of `readers` (all the stack's services unless told) has applied the event: the
    event ids on its first timeline page of the customer, by service."""
    pages = {}
    for name in stack.services if readers is None else readers:
        page = await client.get(
            f"{stack.services[name].url}/v1/customers/{customer_id}/timeline",
            params={"wait_for": event_id, "timeout_ms": timeout_ms},
        )
        assert page.status_code == 200, (name, page.text)
        pages[name] = [e["event_id"] for e in page.json()["events"]]
    return pages


async def post_and_wait(
    client: httpx.AsyncClient,
    stack: Stack,
    body: dict[str, Any],
    readers: Iterable[str] | None = None,
    timeout_ms: int = 10_000,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST one interaction to intake; its 202 answer, once the timeline of each of `readers` (all
    the stack's services unless told) holds the event."""
    r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json=body, headers=headers)
    assert r.status_code == 202, r.text
    posted: dict[str, Any] = r.json()
    pages = await wait_applied(client, stack, posted["customer_id"], posted["event_id"], readers, timeout_ms)
    for name, ids in pages.items():
        assert posted["event_id"] in ids, name
    return posted


async def make_key(stack: Stack, name: str, scopes: list[str], readers: Iterable[str] | None = None) -> dict[str, Any]:
    """A new API key from intake (its whole answer), once each of `readers` (all the stack's
    services unless told) has applied its event and so takes the key."""
    async with api_client(timeout=20) as client:
        r = await client.post(f"{stack.services['intake'].url}/v1/admin/keys", json={"name": name, "scopes": scopes})
        assert r.status_code == 201, r.text
        made: dict[str, Any] = r.json()
        # key events are on no customer's timeline: waiting on any one says when they are applied
        await wait_applied(client, stack, "none", made["event_id"], readers, timeout_ms=15_000)
    return made
