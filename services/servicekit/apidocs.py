"""What the OpenAPI document says about auth.

- Security: every operation whose route depends on the key check (auth.current_principal, or the
  timeline stream's stream_caller, which also takes a ticket) declares the bearer scheme; the others
  (health, readiness, metrics) declare `security: []`. The scopes come from the route's require()
  checks (auth.ScopeCheck): `x-required-scopes` and a sentence in the description. Both are read
  from the routes' dependencies, so the document cannot say other than what the routes check.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from servicekit.auth import ScopeCheck, current_principal
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


def document_security(app: FastAPI) -> None:
    """Add the security schemes and each operation's security to the app's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
