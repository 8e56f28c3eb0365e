"""Erasure by crypto-shredding (docs/product.md §9), end to end on the real stack.

A customer with a distinctive email, phone and message text goes through a whole scenario: a
merge, a complaint that opens a case, a note, a resolution with a reason, emails to a real SMTP
server. Then an admin erases them. Afterwards no personal value of theirs can be read anywhere:
every table of every service database (as text), every topic's payloads and headers, and every
log file of the stack. The timeline keeps its shape (same events, same digest in all four
services) with the content shown as erased, and the export holds nothing personal either.

Before the erasure the same search of the databases and topics finds nothing too: personal data
is stored sealed from the start, not deleted at the end.
"""

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from crmtools.devstack import Stack
from eventkit.partition_ends import PartitionEnds
from servicekit.settings import kafka_options

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER
from tests.conftest import api_client, eventually, running_stack, smtp_env
from tests.e2e.test_operations import crm
from tests.notification.receivers import SmtpServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("erasure-stack"), smtp_env(smtp)) as s:
        yield s


class Person:
    """Values that occur nowhere else, so a hit anywhere is theirs."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.email = f"zebra.{tag}@example.com"
        digits = "".join(random.Random(tag).choice("0123456789") for _ in range(8))
        self.phone = f"+49151{digits}"
        self.message = f"My neighbour Quintus{tag} broke the router"
        self.note = f"Called back Mrs Okonkwo{tag} at home"
        self.reason = f"Technician Ferdinand{tag} replaced it"
        self.remark = f"ring Ignatius{tag} after six"  # in free-form metadata, nested
        self.name = f"Philippa Wexford{tag}"  # the display name (PUT .../profile)
        self.field = f"gate code Leopold{tag}"  # a personal customer field (PUT .../fields)

    @property
    def needles(self) -> dict[str, str]:
        return {
            "email": self.email.split("@")[0],
            "phone": self.phone[3:],
            "message": self.message.split()[2],
            "note": self.note.split()[3],
            "reason": self.reason.split()[1],
            "metadata": self.remark.split()[1],
            "name": self.name.split()[1],
            "field": self.field.split()[2],
        }

    @property
    def metadata(self) -> dict[str, Any]:
        return {"campaign": "spring", "callback": {"notes": [self.remark]}, "score": 3}


async def database_hits(stack: Stack, needles: dict[str, str]) -> list[str]:
    """Every row of every table in every service database, as text, searched for each needle.

    A row as text shows bytea columns (dead letters' message keys and values) as hex, where no
    needle could ever match: those columns are searched decoded as well (escape encoding keeps
    ASCII as it is, so the needles, all ASCII, match where the bytes hold them)."""
    hits: list[str] = []
    for name in stack.services:
        conn = await asyncpg.connect(stack.postgres.dsn(f"crm_{name}"))
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
            binary = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND data_type = 'bytea'"
            )
            decoded: dict[str, list[str]] = {}
            for b in binary:
                decoded.setdefault(b["table_name"], []).append(
                    f"""coalesce(encode(t."{b["column_name"]}", 'escape'), '')"""
                )
            for t in tables:
                text = " || ' ' || ".join(["t::text", *decoded.get(t["table_name"], [])])
                for what, needle in needles.items():
                    n = await conn.fetchval(
                        f'SELECT count(*) FROM "{t["table_name"]}" AS t WHERE ({text}) ILIKE $1', f"%{needle}%"
                    )
                    if n:
                        hits.append(f"{name}.{t['table_name']}: {n} rows with the {what}")
        finally:
            await conn.close()
    return hits


async def topic_hits(stack: Stack, needles: dict[str, str]) -> tuple[list[str], int]:
    """Every record of every topic, value and headers, searched for each needle."""
    reader = PartitionEnds(stack.broker.bootstrap, client_options=kafka_options())
    try:
        partitions = await reader.partitions((*ALL_EVENT_TOPICS, DEADLETTER))
        ends = await reader.read(partitions)
    finally:
        await reader.stop()
    assert partitions and set(ends) == set(partitions), "the broker did not say where every partition ends"
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    hits: list[str] = []
    seen = 0
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        for tp, end in ends.items():
            while end and await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=2000)
                for record in batch.get(tp, []):
                    seen += 1
                    raw = (record.value or b"") + b"".join(v for _, v in record.headers)
                    text = raw.decode(errors="replace").lower()
                    hits.extend(
                        f"{tp.topic} offset {record.offset}: the {w}" for w, n in needles.items() if n.lower() in text
                    )
                if not batch:
                    break
    finally:
        await consumer.stop()
    return hits, seen


async def metrics_hits(stack: Stack, client: httpx.AsyncClient, needles: dict[str, str]) -> list[str]:
    """Every service's /metrics text: labels must never carry a personal value."""
    hits = []
    for name, svc in stack.services.items():
        r = await client.get(f"{svc.url}/metrics")
        assert r.status_code == 200 and "crm_" in r.text, name
        text = r.text.lower()
        hits.extend(f"{name} /metrics: the {w}" for w, n in needles.items() if n.lower() in text)
    return hits


def log_hits(stack: Stack, needles: dict[str, str]) -> list[str]:
    hits = []
    for path in sorted(Path(stack.logs).glob("**/*.log")) + sorted(Path(stack.data_dir).glob("**/postgres.log")):
        text = path.read_text(errors="replace").lower()
        hits.extend(f"{path.name}: the {w}" for w, n in needles.items() if n.lower() in text)
    return hits


async def post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(f"{url}/v1/interactions", json=body)
    assert r.status_code == 202, r.text
    answer: dict[str, Any] = r.json()
    return answer


def interaction(
    customer: dict[str, Any], kind: str, content: str, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "customer": customer,
        "channel": "web",
        "direction": "inbound",
        "kind": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": content,
        "metadata": metadata or {},
    }


async def wait_everywhere(stack: Stack, client: httpx.AsyncClient, customer: str, event_id: str) -> None:
    for svc in stack.services.values():
        r = await client.get(
            f"{svc.url}/v1/customers/{customer}/timeline", params={"wait_for": event_id, "timeout_ms": 20000}
        )
        assert r.status_code == 200, (svc.name, r.status_code)


async def converged_digests(stack: Stack, client: httpx.AsyncClient, customer: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = {}
        for name, svc in stack.services.items():
            r = await client.get(f"{svc.url}/v1/customers/{customer}/timeline/digest")
            found[name] = (r.json()["events"], r.json()["digest"])
        return found if len(set(found.values())) == 1 else None

    return await eventually(probe, timeout_s=30, what="all four digests equal")


async def test_erasure_leaves_no_readable_personal_value_anywhere(stack: Stack, smtp: SmtpServer) -> None:
    person = Person()
    intake, case = stack.services["intake"].url, stack.services["case"].url
    async with api_client(timeout=20) as client:
        # Two customers (one by email, one by phone), then one contact naming both: a merge.
        first = await post(client, intake, interaction({"email": person.email}, "message", person.message))
        second = await post(client, intake, interaction({"phone": person.phone}, "call", person.message))
        merged = await post(
            client,
            intake,
            interaction({"email": person.email, "phone": person.phone}, "complaint", person.message, person.metadata),
        )
        customer = merged["customer_id"]
        assert {first["customer_id"], second["customer_id"]} >= {customer}
        r = await client.put(f"{intake}/v1/customers/{customer}/profile", json={"name": person.name})
        assert r.status_code == 200, r.text
        field = {"name": "erasure_home_note", "type": "text", "personal": True}
        assert (await client.post(f"{intake}/v1/admin/fields", json=field)).status_code in (200, 201)
        r = await client.put(f"{intake}/v1/customers/{customer}/fields", json={"values": {field["name"]: person.field}})
        assert r.status_code == 200, r.text

        async def opened() -> dict[str, Any] | None:
            r = await client.get(f"{case}/v1/cases", params={"customer_id": customer})
            return r.json()["cases"][0] if r.json()["cases"] else None

        listed = await eventually(opened, what="the complaint opens a case")
        case_id, version = listed["case_id"], listed["version"]
        r = await client.post(
            f"{case}/v1/cases/{case_id}/notes", json={"author": "ana", "text": person.note, "expected_version": version}
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            f"{case}/v1/cases/{case_id}/status", json={"status": "open", "expected_version": r.json()["version"]}
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            f"{case}/v1/cases/{case_id}/status",
            json={"status": "resolved", "reason": person.reason, "expected_version": r.json()["version"]},
        )
        assert r.status_code == 200, r.text

        async def resolved_mail() -> list[Any] | None:
            found = [m for m in smtp.messages if m["To"] == person.email and m["X-CRM-Rule"] == "case_resolved"]
            return found or None

        [mail] = await eventually(resolved_mail, what="the case-resolved email reaches the SMTP server")
        assert person.reason in mail.get_content()  # sealed at rest, readable where it is needed

        # Readable through the API while the customer exists...
        r = await client.get(f"{intake}/v1/customers/{customer}")
        assert {i["value"] for i in r.json()["identifiers"]} == {person.email, person.phone}
        assert r.json()["name"] == person.name
        r = await client.get(
            f"{stack.services['analytics'].url}/v1/customers/{customer}/timeline", params={"limit": 100}
        )
        assert person.message in {e["data"].get("content") for e in r.json()["events"]}
        assert person.metadata in [e["data"].get("metadata") for e in r.json()["events"]]
        r = await client.get(f"{case}/v1/cases/{case_id}")
        assert person.note in {n.get("text") for n in r.json()["notes"]}
        # ...but sealed at rest from the start, and never in a metric label.
        assert await database_hits(stack, person.needles) == []
        hits, _ = await topic_hits(stack, person.needles)
        assert hits == []
        assert await metrics_hits(stack, client, person.needles) == []

        # The export, before the erasure, holds every personal value, each from where it is kept.
        await wait_everywhere(stack, client, customer, merged["event_id"])  # reads each service audits

        async def insights() -> dict[str, Any] | None:  # from the KPI stream, which reads on its own
            r = await client.get(f"{stack.services['analytics'].url}/v1/customers/{customer}/insights")
            return r.json() if r.status_code == 200 else None

        await eventually(insights, what="analytics has the customer's insights")
        r = await client.get(f"{intake}/v1/customers/{customer}/export")
        assert r.status_code == 200, r.text
        doc = r.json()
        exported = r.text.lower()
        assert [w for w, n in person.needles.items() if n.lower() not in exported] == []
        assert {i["value"] for i in doc["intake"]["customer"]["identifiers"]} == {person.email, person.phone}
        [exported_case] = doc["case"]["cases"]
        assert [n["text"] for n in exported_case["notes"]] == [person.note]
        assert person.reason in str(exported_case["history"])
        sent = [m for m in doc["notification"]["items"] if m["rule"] == "case_resolved"]
        assert [(m["address"], m["status"]) for m in sent] in ([(person.email, "sent")], [(person.email, "delivered")])
        assert person.reason in sent[0]["body"]
        assert person.email in {c["value"] for c in doc["notification"]["contacts"]}
        for name in ("intake", "case", "notification", "analytics"):
            part = doc[name]
            timeline = part["timeline"]
            assert person.message in {e["data"].get("content") for e in timeline}, name
            assert person.metadata in [e["data"].get("metadata") for e in timeline], name
            assert {e["event_id"] for e in timeline} >= {first["event_id"], second["event_id"], merged["event_id"]}
            assert any(a["customer_id"] == customer for a in part["audit"]), name
        assert doc["analytics"]["insights"]["customer_id"] == customer

        before = await converged_digests(stack, client, customer)
        r = await client.post(f"{intake}/v1/customers/{customer}/erasure")
        assert r.status_code == 202, r.text
        erased = r.json()
        assert set(erased["erased_ids"]) == {first["customer_id"], second["customer_id"]}
        await wait_everywhere(stack, client, customer, erased["event_id"])
        again = await client.post(f"{intake}/v1/customers/{customer}/erasure")
        assert (again.status_code, again.json()["error"]) == (409, "already_erased")

        # No readable personal value anywhere.
        assert await database_hits(stack, person.needles) == []
        hits, seen = await topic_hits(stack, person.needles)
        assert hits == [] and seen > 10
        assert log_hits(stack, person.needles) == []
        assert await metrics_hits(stack, client, person.needles) == []

        # The timelines keep their shape: the same events plus the erasure, equal everywhere.
        after = await converged_digests(stack, client, customer)
        assert next(iter(after.values()))[0] == next(iter(before.values()))[0] + 1
        for svc in stack.services.values():
            r = await client.get(f"{svc.url}/v1/customers/{customer}/timeline", params={"limit": 200})
            events = r.json()["events"]
            text = str(events).lower()
            assert all(n.lower() not in text for n in person.needles.values()), svc.name
            contents = {e["data"]["content"] for e in events if e["type"] == "crm.interaction.recorded.v1"}
            assert contents == {"[erased]"}, svc.name
        r = await client.get(f"{case}/v1/cases/{case_id}")
        assert {n["text"] for n in r.json()["notes"]} == {"[erased]"}
        r = await client.get(f"{intake}/v1/customers/{customer}")
        assert r.json()["identifiers"] == [] and r.json()["erased_at"] is not None
        assert r.json()["fields"] == {"erasure_home_note": "[erased]"}

        # The export gathers from all four services and holds nothing personal.
        r = await client.get(f"{intake}/v1/customers/{customer}/export")
        assert r.status_code == 200, r.text
        exported = r.text.lower()
        assert all(n.lower() not in exported for n in person.needles.values())
        assert "[erased]" in exported

        # New personal data for the erased id is refused; the same email later is a new customer.
        r = await client.post(f"{intake}/v1/interactions", json=interaction({"id": customer}, "message", "hi"))
        assert (r.status_code, r.json()["error"]) == (410, "customer_erased")
        fresh = await post(client, intake, interaction({"email": person.email}, "message", "hello again"))
        assert fresh["customer_id"] not in erased["erased_ids"]


async def test_replay_after_erasure_stays_erased(stack: Stack) -> None:
    """The log still holds the sealed events; rebuilding a projection from it cannot bring them back."""
    person = Person()
    intake = stack.services["intake"].url
    async with api_client(timeout=20) as client:
        accepted = await post(client, intake, interaction({"email": person.email}, "message", person.message))
        customer = accepted["customer_id"]
        await wait_everywhere(stack, client, customer, accepted["event_id"])
        r = await client.post(f"{intake}/v1/customers/{customer}/erasure")
        assert r.status_code == 202, r.text
        await wait_everywhere(stack, client, customer, r.json()["event_id"])
        before = await converged_digests(stack, client, customer)

    result = await asyncio.to_thread(crm, stack, "replay", "analytics")
    assert result.returncode == 0, result.stderr[-2000:]
    async with api_client(timeout=20) as client:
        assert await converged_digests(stack, client, customer) == before
        r = await client.get(f"{stack.services['analytics'].url}/v1/customers/{customer}/timeline")
        [content] = [e["data"]["content"] for e in r.json()["events"] if e["type"] == "crm.interaction.recorded.v1"]
        assert content == "[erased]"
    assert await database_hits(stack, person.needles) == []
