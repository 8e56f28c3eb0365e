"""intake end to end over HTTP, with the four services running: identity merges seen by every
service, idempotent retries under concurrency, and every input error with its status and reason."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import api_client
from tests.e2e.conftest import digests

pytestmark = pytest.mark.e2e
NOW = datetime.now(UTC)


def body(customer: dict[str, Any], channel: str = "web", **extra: Any) -> dict[str, Any]:
    return {
        "customer": customer,
        "channel": channel,
        "direction": "inbound",
        "kind": "message",
        "occurred_at": NOW.isoformat(),
        "content": "hi",
        **extra,
    }


async def wait_equal(stack: Stack, client: httpx.AsyncClient, customer: str, count: int) -> None:
    for _ in range(200):
        d = await digests(stack, customer, client)
        if len(set(d.values())) == 1 and next(iter(d.values()))[0] == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not converged: {d}")


async def test_email_then_phone_then_both_in_chat_is_one_customer_everywhere(stack: Stack) -> None:
    intake = stack.services["intake"].url
    tag = uuid.uuid4().hex[:6]
    email, phone = f"Mia.{tag}@Example.com", f"(415) 555-{int(tag, 16) % 9000 + 1000}"
    async with api_client(timeout=10, follow_redirects=False) as client:
        by_mail = (await client.post(f"{intake}/v1/interactions", json=body({"email": email}, "email"))).json()
        by_phone = (
            await client.post(f"{intake}/v1/interactions", json=body({"phone": phone}, "phone", kind="call"))
        ).json()
        assert by_mail["customer_id"] != by_phone["customer_id"]
        r = await client.post(
            f"{intake}/v1/interactions",
            json=body({"email": f" {email.lower()} ", "phone": phone.replace("(", "").replace(")", "")}, "chat"),
        )
        assert r.status_code == 202
        both = r.json()
        survivor, merged = by_mail["customer_id"], by_phone["customer_id"]  # the older record survives
        assert both["customer_id"] == survivor
        assert len(both["event_ids"]) == 2  # customer.merged, then the interaction

        await wait_equal(stack, client, survivor, 2 + 2 + 2)  # created+interaction, twice; merged+interaction
        for svc in stack.services.values():
            page = (
                await client.get(f"{svc.url}/v1/customers/{survivor}/timeline", params={"wait_for": both["event_id"]})
            ).json()
            interactions = {e["event_id"] for e in page["events"] if e["type"] == "crm.interaction.recorded.v1"}
            assert interactions == {by_mail["event_id"], by_phone["event_id"], both["event_id"]}, svc.name
            merge = next(e for e in page["events"] if e["type"] == "crm.customer.merged.v1")
            assert merge["data"]["merged_id"] == merged
            assert merge["data"]["linked_by"]["kind"] == "phone"

            for path in ("timeline?limit=5", "timeline/digest", "timeline/stream"):
                moved = await client.get(f"{svc.url}/v1/customers/{merged}/{path}")
                assert moved.status_code == 308, (svc.name, path)
                assert moved.headers["location"].startswith(f"/v1/customers/{survivor}/")
                assert moved.headers["location"].endswith(path)

        moved = await client.get(f"{intake}/v1/customers/{merged}")
        assert (moved.status_code, moved.headers["location"]) == (308, f"/v1/customers/{survivor}")
        profile = (await client.get(f"{intake}/v1/customers/{survivor}")).json()
        assert {i["kind"]: i["value"] for i in profile["identifiers"]} == {
            "email": email.lower(),
            "phone": "+1" + "".join(c for c in phone if c.isdigit()),
        }
        assert profile["merged_ids"] == [merged]
        # a later interaction naming the merged id is recorded for the survivor
        late = (await client.post(f"{intake}/v1/interactions", json=body({"id": merged}))).json()
        assert late["customer_id"] == survivor


async def test_twenty_concurrent_retries_of_one_key_make_one_event(stack: Stack) -> None:
    intake = stack.services["intake"].url
    email = f"retry-{uuid.uuid4().hex[:8]}@example.com"
    key = str(uuid.uuid4())
    async with api_client(timeout=10) as client:
        answers = await asyncio.gather(
            *(
                client.post(f"{intake}/v1/interactions", json=body({"email": email}), headers={"Idempotency-Key": key})
                for _ in range(20)
            )
        )
        assert {r.status_code for r in answers} == {202}
        assert len({r.json()["event_id"] for r in answers}) == 1
        customer = answers[0].json()["customer_id"]
        await wait_equal(stack, client, customer, 2)  # customer.created + one interaction, nowhere more

        other = await client.post(
            f"{intake}/v1/interactions", json=body({"email": email}, "sms"), headers={"Idempotency-Key": key}
        )
        assert other.status_code == 409
        assert other.json()["error"] == "idempotency_key_reused"

        client_id = {"client_event_id": f"c-{uuid.uuid4().hex}"}
        once = await client.post(f"{intake}/v1/interactions", json=body({"id": customer}, **client_id))
        twice = await client.post(f"{intake}/v1/interactions", json=body({"id": customer}, **client_id))
        assert once.json() == twice.json()


async def test_batch_is_one_write_and_a_bad_item_rejects_it_whole(stack: Stack) -> None:
    intake = stack.services["intake"].url
    tag = uuid.uuid4().hex[:8]
    items = [body({"email": f"b{n % 3}-{tag}@example.com"}) for n in range(9)]
    async with api_client(timeout=30) as client:
        bad = await client.post(
            f"{intake}/v1/interactions:batch",
            json={"items": [*items[:4], body({"email": "nope"}), body({"id": "ghost"}), *items[4:]]},
        )
        assert bad.status_code == 422
        # the schema error and the one only the database can tell, both, in index order
        assert [(e["index"], e["field"]) for e in bad.json()["errors"]] == [(4, "customer.email"), (5, "customer.id")]
        assert all(e["reason"] for e in bad.json()["errors"])
        assert bad.json()["errors"][1]["reason"] == "unknown customer"
        unknown = await client.post(f"{intake}/v1/interactions:batch", json={"items": [*items, body({"id": "ghost"})]})
        assert unknown.status_code == 422
        assert unknown.json()["errors"] == [{"index": 9, "field": "customer.id", "reason": "unknown customer"}]

        ok = await client.post(f"{intake}/v1/interactions:batch", json={"items": items})
        assert ok.status_code == 202
        answers = ok.json()["items"]
        assert len(answers) == 9 and len({a["customer_id"] for a in answers}) == 3
        await wait_equal(stack, client, answers[0]["customer_id"], 1 + 3)


ERRORS: list[tuple[str, Any, int, str, str]] = [
    # (what, body, status, error, field)
    ("malformed JSON", b'{"customer": ', 400, "malformed_json", "body"),
    ("not an object", b"[1, 2]", 422, "validation_failed", "body"),
    ("wrong type", body({"email": "a@b.co"}, metadata="text"), 422, "validation_failed", "metadata"),
    ("unknown channel", body({"email": "a@b.co"}, "fax"), 422, "validation_failed", "channel"),
    ("unknown kind", body({"email": "a@b.co"}, kind="dance"), 422, "validation_failed", "kind"),
    ("no time zone", body({"email": "a@b.co"}, occurred_at="2026-01-01T10:00:00"), 422, "validation_failed",
     "occurred_at"),
    ("far future", body({"email": "a@b.co"}, occurred_at=(NOW + timedelta(hours=1)).isoformat()), 422,
     "validation_failed", "occurred_at"),
    ("bad email", body({"email": "a@@b"}), 422, "validation_failed", "customer.email"),
    ("bad phone", body({"phone": "12"}), 422, "validation_failed", "customer.phone"),
    ("no reference", body({}), 422, "validation_failed", "customer"),
    ("unknown field", body({"email": "a@b.co"}, colour="red"), 422, "validation_failed", "colour"),
    ("unknown customer", body({"id": "ghost"}), 422, "validation_failed", "customer.id"),
    ("content too long", body({"email": "a@b.co"}, content="x" * 10_001), 413, "content_too_large", "content"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "payload", "status", "error", "field"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_bad_input_gets_a_clear_4xx(
    stack: Stack, what: str, payload: Any, status: int, error: str, field: str
) -> None:
    intake = stack.services["intake"].url
    async with api_client(timeout=10) as client:
        if isinstance(payload, bytes):
            r = await client.post(
                f"{intake}/v1/interactions", content=payload, headers={"content-type": "application/json"}
            )
        else:
            r = await client.post(f"{intake}/v1/interactions", json=payload)
    assert r.status_code == status, r.text
    assert_names(r, error, field)


def assert_names(r: httpx.Response, error: str, field: str) -> None:
    """The error code, and an entry for the field with a reason a person can read."""
    answer = r.json()
    assert answer["error"] == error, answer
    reasons = [e["reason"] for e in answer["errors"] if e["field"] == field]
    assert reasons, answer
    assert all(isinstance(reason, str) and reason.strip() for reason in reasons), answer


async def test_size_limits(stack: Stack) -> None:
    intake = stack.services["intake"].url
    async with api_client(timeout=30) as client:
        huge = await client.post(
            f"{intake}/v1/interactions",
            content=b'{"customer": {"email": "a@b.co"}, "metadata": {"blob": "' + b"x" * 2_000_000 + b'"}}',
            headers={"content-type": "application/json"},
        )
        assert huge.status_code == 413
        assert_names(huge, "body_too_large", "body")
        many = await client.post(f"{intake}/v1/interactions:batch", json={"items": [body({"email": "a@b.co"})] * 1001})
        assert many.status_code == 413
        assert_names(many, "too_many_items", "items")
        empty = await client.post(f"{intake}/v1/interactions:batch", json={"items": []})
        assert empty.status_code == 422


async def test_consent_and_preferences_are_events_on_every_timeline(stack: Stack) -> None:
    intake = stack.services["intake"].url
    async with api_client(timeout=10) as client:
        customer = (
            await client.post(f"{intake}/v1/interactions", json=body({"email": f"c-{uuid.uuid4().hex[:8]}@x.org"}))
        ).json()["customer_id"]
        consent = {"consents": [{"purpose": "marketing", "channel": "email", "granted": False},
                                {"purpose": "service", "granted": True}]}  # fmt: skip
        first = await client.put(f"{intake}/v1/customers/{customer}/consent", json=consent)
        again = await client.put(f"{intake}/v1/customers/{customer}/consent", json=consent)
        assert len(first.json()["event_ids"]) == 2
        assert again.json()["event_ids"] == []  # nothing changed, nothing recorded
        prefs = {
            "preferred_channel": "sms",
            "language": "de-DE",
            "quiet_hours": {"start": "21:30", "end": "07:00", "time_zone": "Europe/Berlin"},
            "vip": True,
            "region": "DE-BE",
        }
        changed = await client.put(f"{intake}/v1/customers/{customer}/preferences", json=prefs)
        assert changed.status_code == 200 and len(changed.json()["event_ids"]) == 1
        bad_zone = await client.put(
            f"{intake}/v1/customers/{customer}/preferences",
            json={**prefs, "quiet_hours": {**prefs["quiet_hours"], "time_zone": "Moon/Base"}},
        )
        assert (bad_zone.status_code, bad_zone.json()["errors"][0]["field"]) == (422, "quiet_hours.time_zone")
        bad_time = await client.put(
            f"{intake}/v1/customers/{customer}/preferences",
            json={"quiet_hours": {"start": "25:00", "end": "07:00", "time_zone": "UTC"}},
        )
        assert bad_time.status_code == 422
        missing = await client.put(f"{intake}/v1/customers/{uuid.uuid4()}/consent", json=consent)
        assert (missing.status_code, missing.json()["error"]) == (404, "customer_not_found")

        profile = (await client.get(f"{intake}/v1/customers/{customer}")).json()
        assert profile["preferences"] == {**prefs, "vip": True}
        assert {(c["purpose"], c["channel"], c["granted"]) for c in profile["consent"]} == {
            ("marketing", "email", False),
            ("service", None, True),
        }
        # created + interaction, two consent changes, one preferences change, and analytics'
        # answer to the VIP flag: the segment "vip", timed a microsecond after what caused it
        await wait_equal(stack, client, customer, 2 + 2 + 1 + 1)
        page = (await client.get(f"{stack.services['notification'].url}/v1/customers/{customer}/timeline")).json()
        types = [e["type"] for e in page["events"]]
        assert types.count("crm.consent.changed.v1") == 2
        assert types[:2] == ["crm.analytics.segment_changed.v1", "crm.customer.preferences_changed.v1"]
        assert page["events"][0]["data"]["segment"] == "vip"


async def test_find_customers_by_email_phone_or_id(stack: Stack) -> None:
    intake = stack.services["intake"].url
    tag = uuid.uuid4().hex[:8]
    async with api_client(timeout=10) as client:
        r = await client.post(
            f"{intake}/v1/interactions",
            json=body({"email": f"Find.{tag}@Example.com", "phone": f"+1 415 555 {int(tag, 16) % 9000 + 1000}"}),
        )
        customer = r.json()["customer_id"]
        by_email = (await client.get(f"{intake}/v1/customers", params={"email": f" find.{tag}@example.COM "})).json()
        assert [c["customer_id"] for c in by_email["items"]] == [customer]
        phone = f"(415) 555-{int(tag, 16) % 9000 + 1000}"
        by_phone = (await client.get(f"{intake}/v1/customers", params={"phone": phone})).json()
        assert [c["customer_id"] for c in by_phone["items"]] == [customer]
        by_id = (await client.get(f"{intake}/v1/customers", params={"q": customer[:8]})).json()
        assert customer in [c["customer_id"] for c in by_id["items"]]
        nobody = (await client.get(f"{intake}/v1/customers", params={"email": f"nobody-{tag}@example.com"})).json()
        assert nobody["items"] == []
        bad = await client.get(f"{intake}/v1/customers", params={"email": "not-an-email"})
        assert (bad.status_code, bad.json()["errors"][0]["field"]) == (422, "query.email")
        assert (await client.get(f"{intake}/v1/customers")).status_code == 422
