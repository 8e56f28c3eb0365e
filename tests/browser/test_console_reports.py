"""The Reports page in a real Chromium against the real stack (issue 29): grouped KPIs with their
totals by team and by a case field, and the two CSV reports downloaded through the page (the key
goes in a header, so the page fetches them and saves a Blob) whose rows match the APIs.
"""

import csv
import io
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


async def open_case(client: httpx.AsyncClient, case: str, customer_id: str, team: str, type_: str) -> dict[str, Any]:
    r = await client.post(f"{case}/v1/cases", json={"customer_id": customer_id, "type": type_, "team": team})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_the_reports_page_groups_kpis_and_downloads_csvs_that_match_the_apis(
    chromium: str,  # noqa: F811
    console_stack: Stack,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    case, analytics = console_stack.services["case"].url, console_stack.services["analytics"].url
    s = uuid.uuid4().hex[:6]
    north, south, model = f"north-{s}", f"south-{s}", f"model_{s}"
    async with api_client(timeout=20) as client:
        r = await client.post(
            f"{case}/v1/admin/fields",
            json={"name": model, "type": "enum", "values": ["X1", "X2"], "label": f"Model {s}"},
        )
        assert r.status_code == 201, r.text
        customer_id = (await seen_by_case(client, console_stack, interaction(f"rep-{s}@example.com", "hi")))[
            "customer_id"
        ]
        opened = [
            await open_case(client, case, customer_id, north, "repair"),
            await open_case(client, case, customer_id, north, "inquiry"),
            await open_case(client, case, customer_id, south, "repair"),
        ]
        for c, value in zip(opened, ["X1", "X2", "X1"], strict=True):
            r = await client.post(
                f"{case}/v1/cases/{c['case_id']}/fields",
                json={"values": {model: value}},
                headers={"If-Match": f'"{c["version"]}"'},
            )
            assert r.status_code == 200, r.text
        r = await client.post(f"{case}/v1/cases/{opened[0]['case_id']}/tags", json={"add": ["warranty"]})
        assert r.status_code == 200, r.text
        ids = {c["case_id"] for c in opened}

        async def analytics_has_them() -> dict[str, Any] | None:
            r = await client.get(
                f"{analytics}/v1/kpis",
                params={"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "group_by": f"field.{model}"},
            )
            groups = {g["group"]: g["cases"]["opened"] for g in r.json().get("groups") or []}
            return groups if groups.get("X1") == 2 and groups.get("X2") == 1 else None

        await eventually(analytics_has_them, 30, "analytics has the three cases and their model")

        async with console_page(chromium, console_stack) as page:
            await page.get_by_role("button", name="Reports").click()
            await expect(page.locator("#reports")).to_be_visible()
            await expect(page.locator("#desk")).to_be_hidden()
            form = page.locator("#report-form")
            await expect(form.get_by_label("Group by")).to_contain_text(f"field: Model {s}")

            await form.get_by_label("Group by").select_option("team")
            await form.get_by_role("button", name="Show", exact=True).click()
            north_row = page.locator(f'#report-rows tr[data-group="{north}"]')
            await expect(north_row.locator('[data-col="opened"]')).to_have_text("2")
            await expect(page.locator(f'#report-rows tr[data-group="{south}"] [data-col="opened"]')).to_have_text("1")
            await expect(page.locator('#report-totals [data-col="opened"]')).to_have_text("3")
            await expect(page.locator("#report-note")).to_have_text("The rows add up to the totals.")

            await form.get_by_label("Group by").select_option(f"field.{model}")
            await form.get_by_role("button", name="Show", exact=True).click()
            await expect(page.locator('#report-rows tr[data-group="X1"] [data-col="opened"]')).to_have_text("2")
            await expect(page.locator('#report-rows tr[data-group="X2"] [data-col="opened"]')).to_have_text("1")
            await screenshot(page, "console-reports.png")

            # the case CSV, saved from a Blob: one row per case, as the cases API has them
            async with page.expect_download() as info:
                await page.get_by_role("button", name="Download cases CSV").click()
            download = await info.value
            assert download.suggested_filename.startswith("cases-") and download.suggested_filename.endswith(".csv")
            assert download.url.startswith("blob:")
            rows = rows_of((await download.path()).read_text(encoding="utf-8"))
            assert {row["case_id"] for row in rows} == ids
            for row in rows:
                api = (await client.get(f"{case}/v1/cases/{row['case_id']}")).json()
                assert (row["customer_id"], row["type"], row["priority"], row["team"], row["status"]) == (
                    api["customer_id"],
                    api["type"],
                    api["priority"],
                    api["team"],
                    api["status"],
                )
                assert row["tags"] == ";".join(api["tags"])
                assert row[f"field.{model}"] == api["fields"][model]

            # the grouped KPIs as CSV: the rows the page shows, then the totals
            async with page.expect_download() as info:
                await page.get_by_role("button", name="Download KPIs CSV").click()
            download = await info.value
            assert download.suggested_filename.startswith(f"kpis-by-field-{model}-")
            kpi_rows = rows_of((await download.path()).read_text(encoding="utf-8"))
            assert [(r["row"], r["group"], r["opened"]) for r in kpi_rows] == [
                ("group", "X1", "2"),
                ("group", "X2", "1"),
                ("total", "", "3"),
            ]
            await expect(page.locator("#download-state")).to_contain_text("saved kpis-by-field")
