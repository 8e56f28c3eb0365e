"""The client against contracts/openapi/*.json: its version, its models' fields and types, and each
method's HTTP method, path, query and body. Run in `make test`, so the client cannot drift from the API."""

import inspect
import json
import tomllib
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import crm_client
import pytest
from crm_client import AsyncClient, Client
from crm_client import operations as ops
from crm_client._core import Call
from crm_client.models import SCHEMAS
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
SPECS = {p.stem: json.loads(p.read_text()) for p in (ROOT / "contracts" / "openapi").glob("*.json")}


def test_the_package_is_versioned_with_the_api() -> None:
    versions = {spec["info"]["version"] for spec in SPECS.values()}
    pyproject = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())
    assert versions == {crm_client.__version__} == {pyproject["project"]["version"]}


def _shape(schema: dict[str, Any], refs: dict[str, str]) -> Any:
    """A property's type, comparable between the API's schema and the client's: nullable, base type,
    items and referenced schemas (by API name); formats, enums and limits left out on purpose (the
    client reads enums as plain strings and times as datetimes)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return ("ref", refs.get(name, name))
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        inner = _shape(options[0], refs) if len(options) == 1 else ("any", tuple(_shape(o, refs) for o in options))
        return ("nullable", inner) if nullable else inner
    kind = schema.get("type")
    if kind == "array":
        return ("array", _shape(schema.get("items", {}), refs))
    if kind == "object" or (kind is None and "additionalProperties" in schema):
        return ("object",)
    if kind in ("integer", "number"):
        return ("number",) if kind == "number" else ("integer",)
    return (kind or "any",)


@pytest.mark.parametrize("model", list(SCHEMAS), ids=lambda m: m.__name__)
def test_each_model_matches_its_openapi_schema(model: type[BaseModel]) -> None:
    service, name = SCHEMAS[model]
    api = SPECS[service]["components"]["schemas"][name]
    mine = model.model_json_schema(by_alias=True, mode="validation")
    # the client's nested models by their API names, so references compare
    refs = {m.__name__: n for m, (_, n) in SCHEMAS.items()}
    api_props, my_props = api.get("properties", {}), mine.get("properties", {})
    assert set(my_props) == set(api_props), f"{model.__name__} vs {name}: fields differ"
    # required: a field the API always sends is one the client requires (defaults only where the API has them)
    assert set(mine.get("required", [])) == set(api.get("required", [])), f"{model.__name__} vs {name}: required"
    for prop in api_props:
        assert _shape(my_props[prop], refs) == _shape(api_props[prop], {}), f"{model.__name__}.{prop} vs {name}"


def test_every_model_a_method_returns_is_checked() -> None:
    checked = set(SCHEMAS)
    for name, fn in inspect.getmembers(ops, inspect.isfunction):
        if name.startswith("_") or fn.__module__ != ops.__name__:
            continue
        (result,) = typing.get_args(inspect.signature(fn).return_annotation)  # Call[X]
        if result is str:  # a CSV report, as text: no schema to compare
            assert fn.__name__.endswith("_csv"), name
            continue
        model = typing.get_args(result)[0] if typing.get_origin(result) is list else result
        assert model in checked, f"{name} returns {model.__name__}, which no OpenAPI schema checks"


# One sample call per operation of the client (arguments as a user would pass them).
SAMPLES: dict[str, Call[Any]] = {
    "record_interaction": ops.record_interaction(
        None,
        customer={"email": "a@example.com"},
        channel="web",
        direction="inbound",
        kind="message",
        occurred_at="2026-12-07T10:00:00+00:00",
    ),
    "record_batch": ops.record_batch([{"channel": "web"}]),
    "timeline": ops.timeline("c1", wait_for="e1", timeout_ms=500, limit=10, before="x"),
    "customer": ops.customer("c1"),
    "set_customer_fields": ops.set_customer_fields("c1", {"product_model": "RX-200", "note": None}),
    "change_customer_tags": ops.change_customer_tags("c1", add=["vip"], remove=["new"]),
    "merge_customers": ops.merge_customers("c1", "c2"),
    "unmerge_customer": ops.unmerge_customer("c1", "c2", [{"kind": "email", "value": "b@example.com"}], reason="r"),
    "list_cases": ops.list_cases(
        status=["open"],
        priority="high",
        type="complaint",
        owner="ana",
        team="support",
        queue="support",
        customer_id="c1",
        breached=True,
        escalated=False,
        limit=5,
        before="x",
        fields={"model": "a1", "under_warranty": True},
        tags=["vip"],
    ),
    "queue": ops.queue("support", limit=5),
    "case": ops.case("k1"),
    "open_case": ops.open_case("c1", "complaint", priority="high", team="support", title="t"),
    "assign": ops.assign("k1", "ana", version=3, team="support"),
    "change_status": ops.change_status("k1", "pending", version=3, reason="waiting"),
    "set_priority": ops.set_priority("k1", "urgent", version=3, reason="vip"),
    "reply": ops.reply("k1", "hello", version=3, channel="email", author="ana"),
    "add_note": ops.add_note("k1", "called back", version=3, author="ana"),
    "link_interaction": ops.link_interaction("k1", "e1", version=3),
    "set_case_fields": ops.set_case_fields("k1", {"model": "a1", "serial": None}, 3),
    "change_case_tags": ops.change_case_tags("k1", ["vip"], ["later"], if_match=3),
    "set_agent_status": ops.set_agent_status("ana", "online"),
    "create_campaign": ops.create_campaign(
        "spring",
        {"segment": "loyal", "region": "DE"},
        "marketing",
        {"en": {"subject": "Hi", "body": "Hello {customer_id}"}},
        send_at=datetime(2026, 12, 8, 9, tzinfo=UTC),
        campaign_id="spring-1",
    ),
    "campaigns": ops.campaigns(limit=5, before="x"),
    "campaign": ops.campaign("spring-1"),
    "pause_campaign": ops.pause_campaign("spring-1"),
    "resume_campaign": ops.resume_campaign("spring-1"),
    "cancel_campaign": ops.cancel_campaign("spring-1"),
    "campaign_results": ops.campaign_results("spring-1"),
    "kpis": ops.kpis(datetime(2026, 12, 1, tzinfo=UTC), "2026-12-08T00:00:00Z", group_by="owner", team="support"),
    "case_report_csv": ops.case_report_csv("2026-12-01T00:00:00Z", datetime(2026, 12, 8, tzinfo=UTC)),
    "kpi_report_csv": ops.kpi_report_csv("2026-12-01T00:00:00Z", "2026-12-08T00:00:00Z", "tag", window="day"),
}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


@pytest.mark.parametrize("method", sorted(SAMPLES))
def test_each_method_calls_the_operation_it_names(method: str) -> None:
    call = SAMPLES[method]
    spec = SPECS[call.service]
    operation = spec["paths"].get(call.path_template, {}).get(call.method.lower())
    assert operation is not None, f"{call.method} {call.path_template} is not in {call.service}.json"
    assert operation["operationId"] == call.operation_id
    parameters = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
    assert {("path", n) for n in call.path_params} == {p for p in parameters if p[0] == "path"}
    # field.<name> filters have names only the field definitions know: the operation describes them.
    assert {("query", n) for n in call.params if not n.startswith("field.")} <= parameters
    if any(n.startswith("field.") for n in call.params):
        assert "field.<name>" in operation.get("description", "")
    assert {("header", n) for n in call.headers} <= parameters
    body = operation.get("requestBody")
    if call.json is None:
        assert body is None or not body.get("required")
    else:
        schema = _resolve(spec, body["content"]["application/json"]["schema"])
        assert set(call.json) <= set(schema["properties"]), f"{method}: body fields not in the API"
        assert set(schema.get("required", [])) <= set(call.json) or method == "record_batch"


def test_client_and_async_client_have_the_same_methods_as_the_operations() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            n: inspect.signature(f)
            for n, f in vars(cls).items()
            if callable(f) and not n.startswith("_") and n not in ("close", "aclose")
        }

    sync, asyn = public(Client), public(AsyncClient)
    assert sync == asyn  # same names, arguments, defaults and result types
    assert set(sync) == set(SAMPLES)
    for name in SAMPLES:
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name))
