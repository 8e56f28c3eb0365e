"""/docs (Swagger UI) and /redoc served by the service itself (servicekit.apidocs): every script,
style and icon the pages name is a file of this service, each page's policy allows its own inline
script by hash and nothing from elsewhere."""

import base64
import hashlib
import importlib
import os
import re

import httpx
import pytest
from fastapi import FastAPI

PAGES = ["/docs", "/redoc"]
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def app() -> FastAPI:
    os.environ.setdefault("MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    service: FastAPI = importlib.import_module("case.main").app
    return service


async def get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


def directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in policy.split(";")) if d}


@pytest.mark.parametrize("page", PAGES)
async def test_the_page_loads_every_asset_from_this_service(page: str) -> None:
    r = await get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    urls = re.findall(r'(?:src|href)="([^"]*)"', r.text)
    urls += re.findall(r"url: '([^']*)'", r.text) + re.findall(r'spec-url="([^"]*)"', r.text)
    assert any(u.endswith(".js") for u in urls), r.text
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} names another origin: {url}"
    for url in {u for u in urls if u != "/openapi.json"}:
        asset = await get(url)
        assert asset.status_code == 200, url
        expected = TYPES[url[url.rindex(".") :]]
        assert asset.headers["content-type"].startswith(expected), (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url


@pytest.mark.parametrize("page", PAGES)
async def test_the_page_policy_allows_its_inline_script_by_hash_and_nothing_else(page: str) -> None:
    r = await get(page)
    policy = directives(r.headers["content-security-policy"])
    scripts = re.findall(r"<script>(.*?)</script>", r.text, re.S)
    hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in scripts}
    assert set(policy["script-src"]) == {"'self'", *hashes}
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert r.headers["x-frame-options"] == "DENY"
    if page == "/docs":
        assert len(hashes) == 1  # Swagger UI's starter script


async def test_swagger_ui_asks_no_outside_validator_for_a_badge() -> None:
    r = await get("/docs")
    assert '"validatorUrl": null' in r.text
