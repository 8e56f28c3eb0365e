"""Every route and every dependency of the four services is async: FastAPI runs a plain `def`
on a worker thread, a thread hop and a queue handoff per request."""

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute

from tests.contract.test_openapi import SERVICES, service_app


def calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from calls(sub)


def route_calls(routes: list[BaseRoute]) -> Iterator[tuple[str, Any]]:
    """(path, callable) of every route and dependency, through included routers (FastAPI keeps
    those as routers of their own, with the dependencies given at inclusion beside them)."""
    for route in routes:
        if isinstance(route, APIRoute | APIWebSocketRoute):
            yield from ((route.path, call) for call in calls(route.dependant))
        included = getattr(route, "original_router", None)
        if included is not None:
            context = route.include_context  # type: ignore[attr-defined]
            yield from ((context.prefix, d.dependency) for d in context.dependencies)
            yield from route_calls(included.routes)


def is_async(call: Any) -> bool:
    method = type(call).__call__ if not inspect.isfunction(call) else None  # a dependency object
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(method)


@pytest.mark.parametrize("service", SERVICES)
def test_no_route_or_dependency_runs_on_a_worker_thread(service: str) -> None:
    checked = 0
    for path, call in route_calls(service_app(service).routes):
        checked += 1
        assert is_async(call), f"{service}: {path} runs {call!r} on a thread"
    assert checked > 20
