"""crm_client against the running stack: record, batch, timeline with wait_for, a merged id's 308,
typed errors, the agents' case calls, the two examples; Client and AsyncClient alike.
(tests/client/test_outage.py: real 503s while the database is away.)"""

import importlib.util
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from crm_client import (
    AsyncClient,
    CampaignResults,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from crmtools.devstack import Stack

from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.helpers import make_key

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"
INTERACTION = "crm.interaction.recorded.v1"


def fields(customer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "customer": customer,
        "channel": "web",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": datetime.now(UTC),
        "content": "hello",
        **extra,
    }


def email() -> str:
    return f"client-{uuid.uuid4().hex[:10]}@example.com"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"crm_client_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_batch_and_read_your_writes_with_wait_for(stack: Stack) -> None:
    with Client(stack.services["intake"].url, ADMIN_KEY) as client:
        who = {"email": email()}
        first = client.record_interaction(**fields(who))
        assert first.event_ids[-1] == first.event_id
        batch = client.record_batch([fields(who, content="two"), fields(who, channel="chat", content="three")])
        assert [a.customer_id for a in batch] == [first.customer_id] * 2
        # the analytics service serves the same timeline: read it there, as of the last write
        with Client(stack.services["analytics"].url, ADMIN_KEY) as reader:
            page = reader.timeline(first.customer_id, wait_for=batch[-1].event_id, timeout_ms=10_000)
        recorded = [e for e in page.events if e.type == INTERACTION]
        assert [e.event_id for e in recorded] == [batch[1].event_id, batch[0].event_id, first.event_id]
        assert recorded[0].data["content"] == "three" and recorded[0].time.tzinfo is not None
        assert page.customer_id == first.customer_id and page.next_before is None
        # a page at a time
        older = client.timeline(first.customer_id, limit=1, wait_for=batch[-1].event_id)
        assert len(older.events) == 1 and older.next_before is not None
        rest = client.timeline(first.customer_id, limit=50, before=older.next_before)
        assert [e.event_id for e in older.events + rest.events] == [e.event_id for e in page.events]


def test_one_idempotency_key_records_once(stack: Stack) -> None:
    with Client(stack.services["intake"].url, ADMIN_KEY) as client:
        body, key = fields({"email": email()}, kind="purchase"), str(uuid.uuid4())
        once, again = (client.record_interaction(idempotency_key=key, **body) for _ in range(2))
        assert once == again
        with pytest.raises(Conflict) as raised:  # the same key for another request
            client.record_interaction(idempotency_key=key, **{**body, "content": "other"})
        assert raised.value.error == "idempotency_key_reused"


def test_a_merged_ids_timeline_and_profile_are_the_survivors(stack: Stack) -> None:
    mail, phone = email(), f"+1415557{uuid.uuid4().int % 10_000:04d}"  # an exchange no other test uses
    with Client(stack.services["intake"].url, ADMIN_KEY) as client:
        by_mail = client.record_interaction(**fields({"email": mail}))
        by_phone = client.record_interaction(**fields({"phone": phone}, channel="phone", kind="call"))
        assert by_mail.customer_id != by_phone.customer_id
        both = client.record_interaction(**fields({"email": mail, "phone": phone}, channel="chat"))
        survivor, merged = by_mail.customer_id, by_phone.customer_id  # the older record survives
        assert both.customer_id == survivor and len(both.event_ids) == 2

        page = client.timeline(merged, wait_for=both.event_id, timeout_ms=10_000)  # 308, followed
        assert page.customer_id == survivor
        assert {e.event_id for e in page.events if e.type == INTERACTION} == {
            by_mail.event_id,
            by_phone.event_id,
            both.event_id,
        }
        profile = client.customer(merged)
        assert profile.customer_id == survivor and profile.merged_ids == [merged]


def test_errors_are_typed_with_the_apis_code_and_fields(stack: Stack) -> None:
    intake = stack.services["intake"].url
    with Client(intake, ADMIN_KEY) as client:
        with pytest.raises(ValidationFailed) as raised:
            client.record_interaction(**fields({"email": email()}, channel="pigeon"))
        assert raised.value.status == 422 and raised.value.error == "validation_failed"
        assert any(e.field.endswith("channel") for e in raised.value.errors), raised.value.errors
        with pytest.raises(NotFound):
            client.customer(str(uuid.uuid4()))
    with Client(intake, "crm_not_a_key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.timeline("anyone")
    assert denied.value.error == "unauthenticated"


async def test_a_key_without_the_scope_is_forbidden_with_the_scopes_that_would_do(stack: Stack) -> None:
    channel_key = (await make_key(stack, f"shop-{uuid.uuid4().hex[:6]}", ["channel:web"]))["key"]
    with Client(stack.services["intake"].url, channel_key) as shop:
        accepted = shop.record_interaction(**fields({"email": email()}))
        with pytest.raises(Forbidden) as raised:
            shop.timeline(accepted.customer_id)
    assert raised.value.error == "forbidden" and "agent" in raised.value.required


def test_an_agent_works_a_case_through_the_client(stack: Stack) -> None:
    intake, case = stack.services["intake"].url, stack.services["case"].url
    with Client(intake, ADMIN_KEY, case_url=case) as client, Client(case, ADMIN_KEY) as at_case:
        accepted = client.record_interaction(**fields({"email": email()}))
        at_case.timeline(accepted.customer_id, wait_for=accepted.event_id, timeout_ms=10_000)  # case knows them

        opened = client.open_case(accepted.customer_id, "inquiry", title="Where is my order?")
        assert client.open_case(accepted.customer_id, "inquiry", case_id=opened.case_id).case_id == opened.case_id
        assigned = client.assign(opened.case_id, "ana", version=opened.version)
        assert assigned.owner == "ana" and assigned.event_ids
        with pytest.raises(Conflict):  # decided on a version that is gone
            client.assign(opened.case_id, "bob", version=opened.version)
        noted = client.add_note(opened.case_id, "called back", version=assigned.version, author="ana")
        replied = client.reply(opened.case_id, "It ships today.", version=noted.version, author="ana")
        assert replied.first_response_at is not None
        step = replied
        if step.status == "new":
            step = client.change_status(opened.case_id, "open", version=step.version)
        pending = client.change_status(opened.case_id, "pending", version=step.version, reason="waiting")
        with pytest.raises(Conflict) as illegal:
            client.change_status(opened.case_id, "new", version=pending.version)
        assert illegal.value.error == "illegal_transition"
        assert illegal.value.current_status == "pending" and "resolved" in illegal.value.allowed

        detail = client.case(opened.case_id)
        assert (detail.status, detail.owner, detail.version) == ("pending", "ana", pending.version)
        assert [n.text for n in detail.notes] == ["called back"]
        assert [h.type for h in detail.history][:1] == ["crm.case.opened.v1"]
        listed = client.list_cases(customer_id=accepted.customer_id, status=["pending"])
        assert [c.case_id for c in listed.cases] == [opened.case_id]
        queue = client.queue("support")
        assert queue.team == "support"
        assert any(c.case_id == opened.case_id for o in queue.owners for c in o.cases)


async def test_the_async_client_does_the_same(stack: Stack) -> None:
    mail, phone = email(), f"+1415556{uuid.uuid4().int % 10_000:04d}"
    intake, case = stack.services["intake"].url, stack.services["case"].url
    async with AsyncClient(intake, ADMIN_KEY, case_url=case) as client:
        by_mail = await client.record_interaction(**fields({"email": mail}))
        [by_phone, both] = await client.record_batch(
            [fields({"phone": phone}, channel="sms"), fields({"email": mail, "phone": phone}, channel="chat")]
        )
        assert both.customer_id == by_mail.customer_id != by_phone.customer_id
        page = await client.timeline(by_phone.customer_id, wait_for=both.event_id, timeout_ms=10_000)
        assert page.customer_id == by_mail.customer_id
        assert both.event_id in [e.event_id for e in page.events]
        assert (await client.customer(by_phone.customer_id)).customer_id == by_mail.customer_id
        with pytest.raises(ValidationFailed) as raised:
            await client.record_interaction(**fields({"email": mail}, direction="sideways"))
        assert any(e.field.endswith("direction") for e in raised.value.errors)
        listed = await client.list_cases(customer_id=by_mail.customer_id)
        assert listed.cases == []


def test_the_web_shop_example_records_an_order_once(stack: Stack) -> None:
    shop = example("web_shop")
    order, buyer, when = uuid.uuid4().hex[:8], email(), datetime.now(UTC)
    first = shop.main(stack.services["intake"].url, ADMIN_KEY, order, buyer, when)
    again = shop.main(stack.services["intake"].url, ADMIN_KEY, order, buyer, when)  # a resubmitted checkout
    assert again.event_id == first.event_id
    with Client(stack.services["intake"].url, ADMIN_KEY) as client:
        page = client.timeline(first.customer_id, wait_for=first.event_id, timeout_ms=10_000)
    [purchase] = [e for e in page.events if e.type == INTERACTION]
    assert purchase.data["kind"] == "purchase" and purchase.data["metadata"]["order_id"] == order


def test_the_chat_widget_example_reads_its_own_messages(stack: Stack) -> None:
    widget = example("chat_widget")
    page = widget.main(stack.services["intake"].url, ADMIN_KEY, email(), uuid.uuid4().hex[:8])
    messages = [e.data["content"] for e in page.events if e.type == INTERACTION]
    assert messages == ["Sorry to hear that! Have you restarted it?", "Hi, my router keeps dropping the connection."]


async def test_a_campaign_is_created_read_paused_cancelled_and_measured_through_the_client(stack: Stack) -> None:
    notification, analytics = stack.services["notification"].url, stack.services["analytics"].url
    campaign_id = f"client-{uuid.uuid4().hex[:8]}"
    audience = {"segment": "vip", "region": "DE"}
    templates = {"en": {"subject": "{campaign_name}", "body": "Hello {customer_id}"}}
    later = datetime.now(UTC) + timedelta(days=1)  # not due: nobody is messaged by this test
    urls = {"notification_url": notification, "analytics_url": analytics}
    async with AsyncClient(stack.services["intake"].url, ADMIN_KEY, **urls) as client:
        created = await client.create_campaign(
            "Client spring", audience, "marketing", templates, send_at=later, campaign_id=campaign_id
        )
        assert (created.campaign_id, created.status, created.audience_size) == (campaign_id, "scheduled", None)
        assert created.send_at == later and created.counts.sent == 0
        again = await client.create_campaign(
            "Client spring", audience, "marketing", templates, send_at=later, campaign_id=campaign_id
        )
        assert again.campaign_id == campaign_id  # a retry with the same id and body is the same campaign
        with pytest.raises(Conflict):
            await client.create_campaign("Other", audience, "marketing", templates, campaign_id=campaign_id)
        with pytest.raises(ValidationFailed) as refused:
            await client.create_campaign("Bad", audience, "marketing", {"en": {"subject": "{nope}", "body": "x"}})
        assert refused.value.errors

        assert (await client.campaign(campaign_id)).name == "Client spring"
        listed = await client.campaigns(limit=100)
        assert campaign_id in [c.campaign_id for c in listed.campaigns]
        assert (await client.pause_campaign(campaign_id)).status == "paused"
        with pytest.raises(Conflict) as twice:
            await client.pause_campaign(campaign_id)
        assert twice.value.error == "illegal_transition"
        assert (twice.value.current_status, twice.value.allowed) == ("paused", ["cancel", "resume"])
        assert (await client.resume_campaign(campaign_id)).status in ("scheduled", "sending")
        assert (await client.cancel_campaign(campaign_id)).status == "cancelled"

        with pytest.raises(NotFound):
            await client.campaign_results(f"none-{uuid.uuid4().hex[:8]}")

        async def results_known() -> CampaignResults | None:
            try:
                return await client.campaign_results(campaign_id)
            except NotFound:  # analytics has not read the campaign's creation yet
                return None

        results = await eventually(results_known, 30, "analytics knows the campaign")
        assert (results.campaign_id, results.name) == (campaign_id, "Client spring")
        assert results.sent == 0 and results.response_rate is None and results.revenue == 0

    # the blocking client reads the same; without the service's URL it refuses the call
    with Client(stack.services["intake"].url, ADMIN_KEY, notification_url=notification) as blocking:
        assert blocking.campaign(campaign_id).status == "cancelled"
        with pytest.raises(ValueError, match="analytics_url"):
            blocking.campaign_results(campaign_id)
