"""Security headers (servicekit.security_headers) on a bare ASGI app: every response, the policy by path."""

import httpx
from servicekit.security_headers import API_POLICY, DOCS_POLICY, SecurityHeaders, page_policy
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def app(policies: dict[str, str]) -> SecurityHeaders:
    async def ok(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/{path:path}", ok)])
    return SecurityHeaders(inner, policies)


async def get(asgi: SecurityHeaders, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as client:
        return await client.get(path)


async def test_every_response_refuses_framing_sniffing_and_referrers() -> None:
    asgi = app({"/console": page_policy(["http://127.0.0.1:8002"])})
    for path in ("/v1/customers/x/timeline", "/console/", "/docs", "/nothing"):
        r = await get(asgi, path)
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


async def test_the_policy_goes_by_path_prefix() -> None:
    console = page_policy(["http://127.0.0.1:8002"])
    asgi = app({"/console": console})
    assert (await get(asgi, "/console/")).headers["content-security-policy"] == console
    assert (await get(asgi, "/console/app.js")).headers["content-security-policy"] == console
    assert (await get(asgi, "/consoles")).headers["content-security-policy"] == API_POLICY
    assert (await get(asgi, "/v1/kpis")).headers["content-security-policy"] == API_POLICY
    assert (await get(asgi, "/docs/oauth2-redirect")).headers["content-security-policy"] == DOCS_POLICY


def test_a_page_policy_allows_its_own_files_and_the_named_origins_only() -> None:
    policy = page_policy(["http://127.0.0.1:8002", "https://case.example.com", "http://127.0.0.1:8002"])
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self' http://127.0.0.1:8002 https://case.example.com"
    assert directives["frame-ancestors"] == "'none'"
