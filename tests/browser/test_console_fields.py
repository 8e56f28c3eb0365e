"""Typed fields and tags in the console, in a real Chromium against the real stack (issue 29): an
admin defines fields; the agent sets them on a customer and a case and tags both from the panels;
all of it is there after a reload. A bad value and a bad tag are refused beside their control; a
field required to resolve blocks resolution with a message beside the status control; a case
changed meanwhile is reloaded, and the agent told. Hostile text is shown as text.
"""

import uuid
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.browser.test_console import (  # noqa: F401 (fixtures)
    chromium,
    console_page,
    console_stack,
    interaction,
    screenshot,
    seen_by_case,
)
from tests.conftest import api_client, eventually

pytestmark = pytest.mark.e2e
HOSTILE = '<img src=x id=pwned onerror="document.title=1">'
HOSTILE_LABEL = '<b id=bold onmouseover="document.title=2">Colour</b>'


async def define(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    r = await client.post(f"{url}/v1/admin/fields", json=body)
    assert r.status_code == 201, r.text


async def open_customer(page: Any, email: str, customer_id: str) -> None:
    from playwright.async_api import expect

    await page.get_by_label("Search by").select_option("email")
    await page.get_by_label("Value", exact=True).fill(email)
    await page.get_by_role("button", name="Find").click()
    await expect(page.locator("#customer-id")).to_have_text(customer_id)


async def test_the_agent_sets_fields_and_tags_on_a_customer_and_sees_them_after_a_reload(
    chromium: str,  # noqa: F811
    console_stack: Stack,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    intake = console_stack.services["intake"].url
    s = uuid.uuid4().hex[:6]
    remark, bought, units, loyal = f"remark_{s}", f"bought_{s}", f"units_{s}", f"loyal_{s}"
    email = f"fields-{s}@example.com"
    async with api_client(timeout=20) as client:
        await define(client, intake, {"name": remark, "type": "text", "personal": True, "label": f"Remark {s}"})
        await define(client, intake, {"name": bought, "type": "date", "label": f"Purchase date {s}"})
        await define(client, intake, {"name": units, "type": "number", "label": f"Units {s}"})
        await define(client, intake, {"name": loyal, "type": "bool", "label": f"Loyal {s}"})
        colour = f"colour_{s}"
        await define(
            client, intake, {"name": colour, "type": "enum", "values": [HOSTILE, "red"], "label": HOSTILE_LABEL}
        )
        customer_id = (await seen_by_case(client, console_stack, interaction(email, "hello")))["customer_id"]

    async with console_page(chromium, console_stack) as page:
        await open_customer(page, email, customer_id)
        panel = page.locator("#customer-fields")
        await expect(panel.get_by_label(f"Remark {s}")).to_have_value("")
        await expect(panel.locator(f'label[for="customer-field-{remark}"]')).to_contain_text("personal")

        # a number the service refuses: said beside that control, nothing saved
        await panel.get_by_label(f"Units {s}").fill("1e17")
        await panel.get_by_role("button", name="Save fields").click()
        error = panel.locator(f'[data-error-for="{units}"]')
        await expect(error).to_have_text("number out of range")
        await expect(panel.get_by_label(f"Units {s}")).to_have_attribute("aria-invalid", "true")
        await expect(panel.locator(".form-error")).to_contain_text(f"values.{units}: number out of range")

        await panel.get_by_label(f"Remark {s}").fill(HOSTILE)
        await panel.get_by_label(f"Purchase date {s}").fill("2026-03-14")
        await panel.get_by_label(f"Units {s}").fill("3")
        await panel.get_by_label(f"Loyal {s}").select_option("true")
        # a label and an enum value with markup in them are text
        await expect(panel.locator(f'label[for="customer-field-{colour}"]')).to_have_text(HOSTILE_LABEL)
        await panel.locator(f"#customer-field-{colour}").select_option(HOSTILE)
        await panel.get_by_role("button", name="Save fields").click()
        await expect(error).to_be_hidden()
        await expect(panel.locator(".form-error")).to_be_hidden()

        # tags: two added (normalised), one removed, a bad one refused beside the box
        tags = page.locator("#customer-tags")
        await tags.get_by_label("Add tags").fill("VIP Gold, warranty")
        await tags.get_by_role("button", name="Add", exact=True).click()
        await expect(tags.locator(".chip-text")).to_have_text(["vip-gold", "warranty"])
        await tags.get_by_role("button", name="Remove tag warranty").click()
        await expect(tags.locator(".chip-text")).to_have_text(["vip-gold"])
        await tags.get_by_label("Add tags").fill("<script>document.title=3</script>")
        await tags.get_by_role("button", name="Add", exact=True).click()
        await expect(tags.locator(".field-error")).to_contain_text("add.0")
        await expect(tags.locator(".chip-text")).to_have_text(["vip-gold"])
        await screenshot(page, "console-fields-customer.png")

        # after a reload (still signed in for this tab) everything is as saved
        await page.reload()
        await expect(page.locator("#workspace")).to_be_visible()
        await open_customer(page, email, customer_id)
        panel = page.locator("#customer-fields")
        await expect(panel.get_by_label(f"Remark {s}")).to_have_value(HOSTILE)
        await expect(panel.get_by_label(f"Purchase date {s}")).to_have_value("2026-03-14")
        await expect(panel.get_by_label(f"Units {s}")).to_have_value("3")
        await expect(panel.get_by_label(f"Loyal {s}")).to_have_value("true")
        await expect(panel.locator(f"#customer-field-{colour}")).to_have_value(HOSTILE)
        assert await page.locator("#bold").count() == 0
        await expect(page.locator("#customer-tags .chip-text")).to_have_text(["vip-gold"])
        assert await page.locator("#pwned").count() == 0
        assert await page.title() == "crm agent console"
        # the timeline says what changed: tags as they are, field names in words
        tagged = page.locator('#timeline li[data-type="crm.customer.tags_changed.v1"] .label')
        await expect(tagged.first).to_have_text("Tags changed (removed warranty)")
        said = await page.evaluate(
            """() => [
              labelOf({type: "crm.customer.tags_changed.v1", data: {added: ["vip_gold", "x"], removed: []}}),
              labelOf({type: "crm.case.tags_changed.v1", data: {added: ["a"], removed: ["b"]}}),
              labelOf({type: "crm.customer.fields_set.v1", data: {changed: ["purchase_date", "units"]}}),
            ]"""
        )
        assert said == [
            "Tags changed (added vip_gold, x)",
            "Case tags changed (added a) (removed b)",
            "Fields changed: purchase date, units",
        ]

    async with api_client(timeout=20) as client:
        shown = (await client.get(f"{intake}/v1/customers/{customer_id}")).json()
    assert shown["fields"] == {remark: HOSTILE, bought: "2026-03-14", units: 3, loyal: True, colour: HOSTILE}
    assert shown["tags"] == ["vip-gold"]


async def test_a_required_case_field_blocks_resolution_beside_the_status_and_a_stale_save_reloads(
    chromium: str,  # noqa: F811
    console_stack: Stack,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    case = console_stack.services["case"].url
    s = uuid.uuid4().hex[:6]
    failure, model = f"failure_{s}", f"model_{s}"
    email = f"case-fields-{s}@example.com"
    async with api_client(timeout=20) as client:
        await define(
            client,
            case,
            {
                "name": failure,
                "type": "enum",
                "values": ["screen", "battery"],
                "label": f"Failure {s}",
                "case_types": ["repair"],
                "required_to_resolve": True,
            },
        )
        await define(client, case, {"name": model, "type": "text", "label": f"Model {s}"})
        customer_id = (await seen_by_case(client, console_stack, interaction(email, "it broke")))["customer_id"]
        r = await client.post(
            f"{case}/v1/cases", json={"customer_id": customer_id, "type": "repair", "title": "Broken"}
        )
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        r = await client.post(f"{case}/v1/cases/{case_id}/status", json={"status": "open"}, headers={"If-Match": '"1"'})
        assert r.status_code == 200, r.text

        async with console_page(chromium, console_stack) as page:
            await open_customer(page, email, customer_id)
            card = page.locator(f'.case[data-case-id="{case_id}"]')
            await expect(card.get_by_label(f"Failure {s}")).to_have_value("")
            await expect(card.locator(f'label[for="case-{case_id}-field-{failure}"]')).to_contain_text(
                "required to resolve"
            )

            # resolving without the failure: refused beside the status control and the field
            await card.get_by_label("New status").select_option("resolved")
            await card.get_by_role("button", name="Change status").click()
            await expect(card.locator(".status-error")).to_contain_text(f"set {failure} before resolving the case")
            await expect(card.locator(f'[data-error-for="{failure}"]')).to_have_text("required to resolve")
            await expect(card).to_have_attribute("data-status", "open")
            await expect(page.locator("#error")).to_be_hidden()
            await screenshot(page, "console-fields-required.png")

            # someone else sets the model meanwhile (the page hears of it live): the agent's save is
            # refused, the form reloaded with the other value, the agent told
            version = int(await card.get_attribute("data-version") or 0)
            await card.get_by_label(f"Model {s}").fill("X1")
            r = await client.post(
                f"{case}/v1/cases/{case_id}/fields",
                json={"values": {model: "Z9"}},
                headers={"If-Match": f'"{version}"'},
            )
            assert r.status_code == 200, r.text
            await expect(card).to_have_attribute("data-version", str(version + 1))
            await card.get_by_role("button", name="Save fields").click()
            await expect(card.locator(".case-fields .form-error")).to_contain_text("changed while you edited it")
            await expect(card.get_by_label(f"Model {s}")).to_have_value("Z9")

            # a note added meanwhile does not touch the fields: the save goes through
            r = await client.post(
                f"{case}/v1/cases/{case_id}/notes",
                json={"author": "elsewhere", "text": "changed meanwhile"},
                headers={"If-Match": f'"{version + 1}"'},
            )
            assert r.status_code == 200, r.text
            await expect(card).to_have_attribute("data-version", str(version + 2))
            version += 2

            # set both, tag the case, then resolve
            await card.get_by_label(f"Model {s}").fill(HOSTILE)
            await card.get_by_label(f"Failure {s}").select_option("screen")
            await card.get_by_role("button", name="Save fields").click()
            await expect(card.locator(".case-fields .form-error")).to_be_hidden()
            await expect(card).to_have_attribute("data-version", str(version + 1))
            await card.get_by_label("Add tags").fill("Warranty")
            await card.get_by_role("button", name="Add", exact=True).click()
            await expect(card.locator(".chip-text")).to_have_text(["warranty"])
            await card.get_by_label("New status").select_option("resolved")
            await card.get_by_role("button", name="Change status").click()
            await expect(card).to_have_attribute("data-status", "resolved")
            await expect(card.locator(".status-error")).to_be_hidden()

            await page.reload()
            await expect(page.locator("#workspace")).to_be_visible()
            await open_customer(page, email, customer_id)
            card = page.locator(f'.case[data-case-id="{case_id}"]')
            await expect(card.get_by_label(f"Failure {s}")).to_have_value("screen")
            await expect(card.get_by_label(f"Model {s}")).to_have_value(HOSTILE)
            await expect(card.locator(".chip-text")).to_have_text(["warranty"])
            assert await page.locator("#pwned").count() == 0
            await screenshot(page, "console-fields-case.png")

            # the narrow view: the fields, chips and tag box fit the screen
            await page.set_viewport_size({"width": 375, "height": 800})

            async def fits() -> bool | None:
                return True if await page.evaluate("document.documentElement.scrollWidth") <= 375 else None

            await eventually(fits, 5, "the page fits 375 px")
            await screenshot(page, "console-fields-375px.png")

        shown = (await client.get(f"{case}/v1/cases/{case_id}")).json()
    assert (shown["status"], shown["fields"], shown["tags"]) == (
        "resolved",
        {failure: "screen", model: HOSTILE},
        ["warranty"],
    )


async def test_the_agent_merges_a_duplicate_by_hand_and_undoes_it_from_the_customer_panel(
    chromium: str,  # noqa: F811
    console_stack: Stack,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    intake = console_stack.services["intake"].url
    s = uuid.uuid4().hex[:6]
    first, second = f"first-{s}@example.com", f"second-{s}@example.com"
    async with api_client(timeout=20) as client:
        survivor = (await seen_by_case(client, console_stack, interaction(first, "hello")))["customer_id"]
        duplicate = (await seen_by_case(client, console_stack, interaction(second, "me again")))["customer_id"]

        async with console_page(chromium, console_stack) as page:
            await open_customer(page, first, survivor)
            await expect(page.locator("#live")).to_have_text("live")  # the merge's event comes on the stream
            await page.get_by_label("Duplicate's customer id").fill(duplicate)
            await page.get_by_role("button", name="Merge into this customer").click()
            await expect(page.locator('#profile [data-fact="Merged ids"]')).to_have_text(duplicate)
            await expect(page.locator('#profile [data-fact="Identifiers"]')).to_contain_text(f"email: {second}")
            await expect(page.locator("#timeline")).to_contain_text("me again")  # the duplicate's events joined
            assert (await client.get(f"{intake}/v1/customers/{duplicate}")).status_code == 308

            # merging it again is refused beside the form, in intake's words
            await page.get_by_label("Duplicate's customer id").fill(duplicate)
            await page.get_by_role("button", name="Merge into this customer").click()
            await expect(page.locator("#merge-error")).to_contain_text("(409)")
            await expect(page.locator("#error")).to_be_hidden()

            # undo it, giving the duplicate its email back
            await page.get_by_text(f"Undo the merge of {duplicate}").click()
            await page.get_by_label(f"email: {second}").check()
            await page.get_by_label("Reason (optional)").fill("two people")
            await page.get_by_role("button", name=f"Undo the merge of {duplicate}").click()
            await expect(page.locator('#profile [data-fact="Merged ids"]')).to_have_text("none")
            await expect(page.locator('#profile [data-fact="Identifiers"]')).not_to_contain_text(second)
            # the live timeline hears of the unmerge and is read again: the duplicate's events leave it
            await expect(page.locator('#timeline li[data-type="crm.customer.unmerged.v1"]')).to_have_count(1)
            await expect(page.locator("#timeline")).not_to_contain_text("me again")
            await expect(page.locator("#timeline")).to_contain_text("hello")
            await screenshot(page, "console-unmerged.png")

        r = await client.get(f"{intake}/v1/customers/{duplicate}")
        assert r.status_code == 200, r.text  # answers for itself again, no 308
        assert [i["value"] for i in r.json()["identifiers"]] == [second]


async def test_a_personal_field_reads_erased_after_the_customers_erasure(
    chromium: str,  # noqa: F811
    console_stack: Stack,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    intake = console_stack.services["intake"].url
    s = uuid.uuid4().hex[:6]
    secret, plan = f"secret_{s}", f"plan_{s}"
    async with api_client(timeout=20) as client:
        await define(client, intake, {"name": secret, "type": "text", "personal": True, "label": f"Secret {s}"})
        await define(client, intake, {"name": plan, "type": "text", "label": f"Plan {s}"})
        customer_id = (await seen_by_case(client, console_stack, interaction(f"erase-{s}@example.com", "hi")))[
            "customer_id"
        ]
        r = await client.put(
            f"{intake}/v1/customers/{customer_id}/fields", json={"values": {secret: "born 1970", plan: "gold"}}
        )
        assert r.status_code == 200, r.text
        r = await client.post(f"{intake}/v1/customers/{customer_id}/erasure")
        assert r.status_code == 202, r.text

        async def erased() -> bool | None:
            shown = (await client.get(f"{intake}/v1/customers/{customer_id}")).json()
            return True if shown["fields"].get(secret) == "[erased]" else None

        await eventually(erased, 20, "the personal field erased")

    async with console_page(chromium, console_stack) as page:
        await page.get_by_label("Search by").select_option("q")
        await page.get_by_label("Value", exact=True).fill(customer_id)
        await page.get_by_role("button", name="Find").click()
        await expect(page.locator("#customer-id")).to_have_text(customer_id)
        panel = page.locator("#customer-fields")
        await expect(panel.locator(f"#customer-field-{secret}")).to_have_text("[erased]")
        assert await panel.locator(f'input[name="{secret}"]').count() == 0  # nothing to edit
        await expect(panel.get_by_label(f"Plan {s}")).to_have_value("gold")
        await expect(page.locator("#customer")).not_to_contain_text("born 1970")
