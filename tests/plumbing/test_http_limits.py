"""servicekit.http in process: bodies over the limit while streaming, bodies json.loads cannot read,
and control characters in the URL, each answered in the shared error shape (no stack)."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from servicekit.http import BodySizeLimit, SafeUrl, install_error_handlers

LIMIT = 16 * 1024


class Thing(BaseModel):
    name: str = "x"


def app() -> FastAPI:
    api = FastAPI()
    install_error_handlers(api)
    api.add_middleware(BodySizeLimit, default_bytes=LIMIT)
    api.add_middleware(SafeUrl)

    @api.post("/things/{thing_id}")
    async def post_thing(thing_id: str, body: Thing, q: str | None = None) -> dict[str, Any]:
        return {"thing_id": thing_id, "name": body.name, "q": q}

    return api


async def call(path: str, content: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, content=content, headers={"content-type": "application/json"})


def error(r: httpx.Response, status: int, code: str, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == code and body["errors"][0]["field"] == field, body
    return body


async def test_a_chunked_body_over_the_limit_is_413_not_400() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(4):
            yield b"x" * 5000
        yield b'"}'

    error(await call("/things/1", chunks()), 413, "body_too_large", "body")


async def test_a_body_within_the_limit_is_read() -> None:
    r = await call("/things/1?q=ok", b'{"name": "a\\tb"}')
    assert r.status_code == 200 and r.json() == {"thing_id": "1", "name": "a\tb", "q": "ok"}


@pytest.mark.parametrize(
    ("content", "status", "code", "kind"),
    [
        (b"[" * 1000 + b"]" * 1000, 422, "validation_failed", "too_deep"),
        (b'{"name": ' + b"9" * 4500 + b"}", 422, "validation_failed", "value_error"),
        (b'{"name": "\xff\xfe"}', 400, "malformed_json", "json_invalid"),
    ],
)
async def test_bodies_json_cannot_read_say_why(content: bytes, status: int, code: str, kind: str) -> None:
    assert error(await call("/things/1", content), status, code, "body")["errors"][0]["type"] == kind


@pytest.mark.parametrize(
    ("path", "field"), [("/things/a%00b", "path"), ("/things/%1B", "path"), ("/things/1?q=a%00", "query.q")]
)
async def test_control_characters_in_the_url_are_422(path: str, field: str) -> None:
    error(await call(path, b"{}"), 422, "validation_failed", field)
