"""The four services' OpenAPI documents as a contract for client generators: an explicit camelCase
operation id on every operation, one meaning per id across the services, and auth declared as the
routes check it (bearer key and scopes; health, readiness and metrics open). The documented auth is
held against the apps themselves: requests without a key, and with a key of no scope, go through
each app in process (no database: auth refuses before a route would touch one)."""

import importlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from servicekit.auth import Principal, hash_key

SERVICES = ["intake", "case", "notification", "analytics"]
PUBLIC = {"/healthz", "/readyz", "/metrics"}
CAMEL_CASE = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*")
SCOPES = ("agent", "supervisor", "ops", "keys", "campaigns", "channel:web")  # every scope but admin


def service_app(service: str) -> FastAPI:
    os.environ.setdefault("MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")  # as contracts.generate
    app: FastAPI = importlib.import_module(f"{service}.main").app
    return app


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            yield method.upper(), path, op


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_names_its_operation_id_in_camel_case(service: str) -> None:
    app = service_app(service)
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            # Set on the route, not made by FastAPI (create_key_v1_admin_keys_post).
            assert route.operation_id is not None, f"{service}: {route.path} has no operation_id="
    ids = [op["operationId"] for _, _, op in operations(app.openapi())]
    for op_id in ids:
        assert CAMEL_CASE.fullmatch(op_id), f"{service}: {op_id} is not camelCase"
    assert len(ids) == len(set(ids)), f"{service}: duplicate operation ids"


def test_an_operation_id_means_one_route_across_the_services() -> None:
    """The routes every service has (timeline, audit, health...) keep one id; no two different
    routes share one, so a client of all four services has one method per id."""
    routes: dict[str, set[tuple[str, str]]] = {}
    for service in SERVICES:
        for method, path, op in operations(service_app(service).openapi()):
            routes.setdefault(op["operationId"], set()).add((method, path))
    shared = {op_id: found for op_id, found in routes.items() if len(found) > 1}
    assert not shared, shared
    assert {"recordInteraction", "recordInteractionBatch", "getTimeline", "getCustomer", "createKey"} <= routes.keys()
    assert {"listCases", "getCase", "createCase", "listNotifications", "getKpis"} <= routes.keys()


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_but_health_and_metrics_declares_the_bearer_key(service: str) -> None:
    doc = service_app(service).openapi()
    bearer = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for method, path, op in operations(doc):
        if path in PUBLIC:
            assert op["security"] == [], (method, path)
            continue
        assert {"bearerAuth": []} in op["security"], (method, path, op.get("security"))
        assert "**Auth:**" in op["description"], (method, path)
        if path.endswith("/timeline/stream"):  # a browser's EventSource sends a ticket instead
            assert op["security"] == [{"bearerAuth": []}, {"streamTicket": []}]
    by_route = {(m, p): op for m, p, op in operations(doc)}
    assert by_route["GET", "/v1/admin/audit"]["x-required-scopes"] == ["admin"]
    assert by_route["GET", "/v1/customers/{customer_id}/timeline"]["x-required-scopes"] == ["agent"]


def test_scopes_joined_from_router_and_route_name_what_passes_both() -> None:
    """notification's router lets agent or ops in, the export route only admin: admin it is."""
    doc = service_app("notification").openapi()
    export = doc["paths"]["/v1/admin/customers/{customer_id}/notifications"]["get"]
    assert export["x-required-scopes"] == ["admin"]
    listing = doc["paths"]["/v1/notifications"]["get"]
    assert listing["x-required-scopes"] == ["agent", "ops"]


def _request_for(method: str, path: str, op: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    url = re.sub(r"\{[^}]+\}", "x", path)
    return method, url, {"json": {}} if "requestBody" in op else {}


@pytest.mark.parametrize("service", SERVICES)
async def test_the_documented_security_is_what_the_routes_check(service: str) -> None:
    """No key: 401 wherever the bearer key is declared, none where `security: []`. A key of one
    scope: past the checks (whatever the route then answers without its database) where that scope
    is in `x-required-scopes`, 403 where it is not."""
    app = service_app(service)
    doc = app.openapi()
    keys = {scope: f"crm_test_scope_{scope}" for scope in SCOPES}
    keys[""] = "crm_test_no_scope"
    # Keys the app knows without a database: their lookups cached, as if read a moment ago.
    for scope, key in keys.items():
        principal = Principal(f"k-{scope}", scope or "no scope", frozenset({scope} - {""}))
        app.state.runtime.auth._cache[hash_key(key)] = (time.monotonic() + 3600, principal)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for method, path, op in operations(doc):
            if path == "/readyz":
                continue  # asks the database, which this app has not got: 503, not 401
            method, url, body = _request_for(method, path, op)
            anonymous = await client.request(method, url, **body)
            if op["security"] == []:
                assert anonymous.status_code == 200, (method, path, anonymous.status_code)
                continue
            assert anonymous.status_code == 401, (method, path, anonymous.status_code, anonymous.text)
            assert anonymous.json()["error"] == "unauthenticated"
            if "x-required-scopes" not in op:
                continue
            for scope, key in keys.items():
                if scope in op["x-required-scopes"] and path.endswith("/stream"):
                    continue  # past the checks it streams for ever
                r = await client.request(method, url, headers={"Authorization": f"Bearer {key}"}, **body)
                if scope in op["x-required-scopes"]:
                    assert r.status_code not in (401, 403), (method, path, scope, r.status_code, r.text)
                else:
                    assert r.status_code == 403, (method, path, scope, r.status_code, r.text)
                    assert r.json()["error"] == "forbidden"
