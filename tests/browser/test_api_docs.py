"""Swagger UI and ReDoc in a real Chromium, offline: the pages render the service's operations
with nothing fetched from another origin; the one request ReDoc attempts elsewhere (its maker's
logo) is stopped by the page's Content-Security-Policy, and Swagger UI meets no violation at all.

The app is served by uvicorn in this process without its lifespan: the pages and /openapi.json
need no database or broker.
"""

import asyncio
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from crmtools.processes import free_port

from tests.browser.test_console import CHROMIUM_ARGS, chromium  # noqa: F401 (the fixture)

REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# Every violation the page meets, collected where the page can report it.
REPORT_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture(scope="module")
def docs_url() -> Iterator[str]:
    os.environ.setdefault("MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    app = importlib.import_module("case.main").app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            pytest.fail("uvicorn did not start")
        threading.Event().wait(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


async def _visit(chromium_path: str, url: str, ready: str) -> tuple[list[str], list[str], Any]:
    """(requests to other origins, CSP violations, the text of the `ready` element) once it shows."""
    from playwright.async_api import async_playwright

    origin = url.split("/", 3)[:3]
    elsewhere: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            page.on("request", lambda r: elsewhere.append(r.url) if r.url.split("/", 3)[:3] != origin else None)
            await page.add_init_script(REPORT_VIOLATIONS)
            await page.goto(url)
            await page.wait_for_selector(ready, timeout=30_000)
            await asyncio.sleep(0.5)  # let late requests (fonts, workers) show up too
            violations = await page.evaluate("window.__violations")
            text = await page.inner_text("body")
        finally:
            await browser.close()
    return [u for u in elsewhere if not u.startswith(("data:", "blob:"))], violations, text


async def test_swagger_ui_renders_offline_with_the_bearer_scheme(chromium: str, docs_url: str) -> None:  # noqa: F811
    elsewhere, violations, text = await _visit(chromium, f"{docs_url}/docs", ".opblock-summary-path")
    assert elsewhere == []
    assert violations == []
    assert "/v1/cases/{case_id}" in text
    assert "Authorize" in text  # the bearer scheme: a place to give the key


async def test_redoc_renders_offline(chromium: str, docs_url: str) -> None:  # noqa: F811
    elsewhere, violations, text = await _visit(chromium, f"{docs_url}/redoc", "h2")
    # ReDoc's sidebar always shows its maker's logo from their CDN; the policy stops the request
    # before it leaves (the image then hides itself). Nothing else is asked of another origin.
    assert violations == [f"img-src {REDOCLY_LOGO}"]
    assert elsewhere == [REDOCLY_LOGO]
    assert "One case with SLA state and its full history" in text
    assert "bearerAuth" in text
