"""A customer's export: everything the four services hold about them, as one JSON document.

intake gathers the others' parts over HTTP with the caller's admin key (so each service checks
it and audits the read); a service that does not answer fails the export, never a partial one.
"""

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from servicekit import timeline
from servicekit.auth import audit_page
from servicekit.keyring import KeyRing

from intake.settings import IntakeSettings


async def customer_export(
    pool: asyncpg.Pool,
    keyring: KeyRing,
    settings: IntakeSettings,
    profile: dict[str, Any],
    customer_id: str,
    authorization: str,
) -> dict[str, Any]:
    ids = [customer_id, *profile["merged_ids"]]  # what was recorded under a merged id is theirs too
    async with pool.acquire() as conn:
        events = await keyring.unseal_items(await _whole_timeline(conn, customer_id))
        audit = await _whole_audit(conn, ids)
    headers = {"Authorization": authorization}
    remote = {"case": settings.case_url, "notification": settings.notification_url, "analytics": settings.analytics_url}
    async with httpx.AsyncClient(timeout=10, headers=headers) as client:
        gather = _Gatherer(client)
        cases, notifications, insights, timelines, audits = await asyncio.gather(
            _cases(gather, settings.case_url, ids),
            gather.one(f"{settings.notification_url}/v1/admin/customers/{customer_id}/notifications"),
            gather.one(f"{settings.analytics_url}/v1/customers/{customer_id}/insights", missing_ok=True),
            asyncio.gather(
                *(gather.pages(f"{url}/v1/customers/{customer_id}/timeline", "events") for url in remote.values())
            ),
            asyncio.gather(*(_remote_audit(gather, url, ids) for url in remote.values())),
        )
    timeline_of = dict(zip(remote, timelines, strict=True))
    audit_of = dict(zip(remote, audits, strict=True))
    return {
        "customer_id": customer_id,
        "customer_ids": ids,
        "exported_at": datetime.now(UTC).isoformat(),
        "intake": {"customer": profile, "timeline": events, "audit": audit},
        "case": {"cases": cases, "timeline": timeline_of["case"], "audit": audit_of["case"]},
        "notification": {
            **notifications,
            "timeline": timeline_of["notification"],
            "audit": audit_of["notification"],
        },
        "analytics": {
            "customer_id": customer_id,
            "insights": insights,
            "timeline": timeline_of["analytics"],
            "audit": audit_of["analytics"],
        },
    }


class Unavailable(Exception):
    """A service that did not answer, or answered with an error: an export must not be partial."""


class _Gatherer:
    """GETs for the export: JSON bodies, every page of paged lists, a bounded number at a time."""

    def __init__(self, client: httpx.AsyncClient, parallel: int = 8) -> None:
        self.client = client
        self._slots = asyncio.Semaphore(parallel)

    async def one(self, url: str, params: dict[str, Any] | None = None, missing_ok: bool = False) -> dict[str, Any]:
        async with self._slots:
            try:
                r = await self.client.get(url, params=params)
            except httpx.HTTPError as exc:
                raise Unavailable(f"{_where(url)} did not answer ({type(exc).__name__})") from exc
        if r.status_code == 404 and missing_ok:
            return {"status": 404, **r.json()}  # nothing known there (yet): say so, do not fail
        if r.status_code != 200:
            raise Unavailable(f"{_where(url)} answered {r.status_code}")
        body: dict[str, Any] = r.json()
        return body

    async def pages(self, url: str, items: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a list paged by next_before (newest first, as the services page)."""
        out: list[Any] = []
        query: dict[str, Any] = {**(params or {}), "limit": 500}
        while True:
            page = await self.one(url, query)
            out.extend(page[items])
            if not page.get("next_before"):
                return out
            query["before"] = page["next_before"]


def _where(url: str) -> str:
    """host:port only: paths hold customer ids, which error messages should not carry."""
    return httpx.URL(url).netloc.decode()


async def _cases(gather: _Gatherer, case_url: str, ids: list[str]) -> list[dict[str, Any]]:
    """Every case of the customer (and of the ids merged into it) with its notes and full history."""
    listed = await asyncio.gather(*(gather.pages(f"{case_url}/v1/cases", "cases", {"customer_id": cid}) for cid in ids))
    case_ids = list(dict.fromkeys(c["case_id"] for page in listed for c in page))
    return list(await asyncio.gather(*(gather.one(f"{case_url}/v1/cases/{case_id}") for case_id in case_ids)))


async def _remote_audit(gather: _Gatherer, url: str, ids: list[str]) -> list[dict[str, Any]]:
    rows = await asyncio.gather(*(gather.pages(f"{url}/v1/admin/audit", "items", {"customer_id": cid}) for cid in ids))
    return [r for per_id in rows for r in per_id]


async def _whole_audit(conn: Any, ids: list[str]) -> list[dict[str, Any]]:
    """intake's own audit rows about the customer (its own table: no need to ask itself over HTTP)."""
    out: list[dict[str, Any]] = []
    for cid in ids:
        cursor = None
        while True:
            rows, cursor = await audit_page(conn, None, cid, 1000, cursor)
            out.extend(rows)
            if cursor is None:
                break
    return out


async def _whole_timeline(conn: Any, customer_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = await timeline.page(conn, customer_id, 500, cursor, own=True)  # intake: own_events
        items.extend(page)
        if cursor is None:
            return items
