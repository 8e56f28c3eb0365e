"""What the OpenAPI document says about auth, and the interactive docs served from the service.

- Security: every operation whose route depends on the key check (auth.current_principal, or the
  timeline stream's stream_caller, which also takes a ticket) declares the bearer scheme; the others
  (health, readiness, metrics) declare `security: []`. The scopes come from the route's require()
  checks (auth.ScopeCheck): `x-required-scopes` and a sentence in the description. Both are read
  from the routes' dependencies, so the document cannot say other than what the routes check.
- /docs (Swagger UI) and /redoc (ReDoc) load their scripts and styles from this service, files the
  fastapi-offline package ships, so they work with no network; each page's inline script is allowed
  by its hash in the page's own Content-Security-Policy.
"""

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles

from servicekit.auth import ScopeCheck, current_principal
from servicekit.security_headers import docs_policy
from servicekit.streamtickets import stream_caller

BEARER = "bearerAuth"
TICKET = "streamTicket"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, `Authorization: Bearer <key>`: made by POST /v1/admin/keys (intake) with"
        " scopes, or the bootstrap admin key. Scopes: `channel:<name>` posts that channel's interactions,"
        " `agent` reads timelines and customers and works cases, `supervisor` manages agents, `ops` reads"
        " analytics, `keys` reads data keys (services), `admin` may do everything. An operation's"
        " `x-required-scopes`: one of them will do.",
    },
    TICKET: {
        "type": "apiKey",
        "in": "query",
        "name": "ticket",
        "description": "A single-use ticket from POST /v1/stream-tickets, for a browser's EventSource (it cannot"
        " send a header); good for one customer's timeline stream on the service that issued it, for 60 s.",
    },
}


@dataclass(frozen=True)
class Guard:
    """A dependency that authenticates: the security requirements it satisfies (any one of them
    will do) and the scopes it checks itself."""

    security: tuple[str, ...]
    scopes: tuple[str, ...] = ()


GUARDS: dict[Callable[..., Any], Guard] = {
    current_principal: Guard((BEARER,)),
    stream_caller: Guard((BEARER, TICKET), ("agent",)),
}


def _calls(dependant: Dependant) -> Iterator[Any]:
    yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def required_scopes(checks: list[tuple[str, ...]]) -> list[str]:
    """The scopes of which one will do, given every check a route makes (each: one of these).
    `admin` passes every check, so it is named only when nothing else would do."""
    common = set.intersection(*(set(c) for c in checks)) - {"admin"}
    return sorted(common) or ["admin"]


def _auth_sentence(scopes: list[str] | None, ticket: bool) -> str:
    if scopes is None:
        sentence = "**Auth:** any valid API key; the route checks what the key may do"
    elif scopes == ["admin"]:
        sentence = "**Auth:** an API key with scope `admin`"
    else:
        which = "scope" if len(scopes) == 1 else "one of the scopes"
        sentence = f"**Auth:** an API key with {which} {', '.join(f'`{s}`' for s in scopes)} (or `admin`)"
    return sentence + ("; a browser may pass a stream ticket (`?ticket=`) instead." if ticket else ".")


def declare_security(app: FastAPI, schema: dict[str, Any]) -> None:
    """Add the security schemes and each operation's security to the app's OpenAPI document
    (called by http.document_errors before it caches the document)."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        calls = list(_calls(route.dependant))
        guards = [GUARDS[c] for c in calls if c in GUARDS]
        checks = [c.scopes for c in calls if isinstance(c, ScopeCheck)] + [g.scopes for g in guards if g.scopes]
        for method in route.methods or ():
            operation: dict[str, Any] = schema["paths"][route.path_format][method.lower()]
            if not guards:
                operation["security"] = []
                continue
            # Every guard must pass: what satisfies them all (a ticket alone passes no key check).
            schemes = [s for s in guards[0].security if all(s in g.security for g in guards)]
            operation["security"] = [{name: []} for name in schemes]
            scopes = required_scopes(checks) if checks else None
            if scopes is not None:
                operation["x-required-scopes"] = scopes
            sentence = _auth_sentence(scopes, TICKET in schemes)
            description = operation.get("description", "")
            operation["description"] = f"{description}\n\n{sentence}" if description else sentence


# --- /docs and /redoc, from this service --------------------------------------------------------------------

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PREFIX = "/docs/assets"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def _with_policy(html: str) -> HTMLResponse:
    """The page with a policy that allows its own inline scripts by their hash, and nothing
    from elsewhere."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    ]
    return HTMLResponse(html, headers={"Content-Security-Policy": docs_policy(hashes), "Cache-Control": "no-cache"})


def install_docs(app: FastAPI) -> None:
    """GET /docs (Swagger UI) and GET /redoc (ReDoc), assets under /docs/assets. The FastAPI app
    is made with docs_url=None and redoc_url=None: FastAPI's own pages load from a CDN."""
    app.mount(ASSETS_PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        html = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
            # No badge from the public validator: the page makes no request to another origin.
            swagger_ui_parameters={"validatorUrl": None},
        )
        return _with_policy(bytes(html.body).decode())

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        html = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
            with_google_fonts=False,
        )
        return _with_policy(bytes(html.body).decode())

    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
