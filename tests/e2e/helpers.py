"""What many end-to-end tests do against a running stack: build an interaction, post it to intake
and wait until the services' timelines have it."""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from crmtools.devstack import Stack


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
    for name in stack.services if readers is None else readers:
        page = await client.get(
            f"{stack.services[name].url}/v1/customers/{posted['customer_id']}/timeline",
            params={"wait_for": posted["event_id"], "timeout_ms": timeout_ms},
        )
        assert page.status_code == 200, (name, page.text)
        assert posted["event_id"] in [e["event_id"] for e in page.json()["events"]], name
    return posted
