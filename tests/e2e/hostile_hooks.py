"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.e2e.hostile_hooks) for tests/e2e/test_fuzz.py: each
generated request gets one hostile value where the schema put an ordinary one, so every route of
every service sees lone surrogates, NUL and control characters, non-ASCII and overlong digits,
numbers where text or dates belong, and JSON nested far past any limit.
"""

import itertools
from collections import defaultdict
from typing import Any

import schemathesis
from hypothesis import strategies as st

# Text no client should send; JSON bodies carry them as \u escapes, so all of them are sendable.
HOSTILE_TEXT = [
    "\ud800",
    "a\udfffb",
    "\x00",
    "a\x00b",
    "\x01",
    "\x1b[2J",
    "\x7f",
    "\x85",
    "\u2028",
    "²",
    "٣",
    "\uff11\uff12",  # fullwidth digits
    "9" * 30,
    "9" * 5000,
    "-1",
    "1e999",
    "NaN",
    "",
]
# What fits in a URL or header once percent-encoded or as Latin-1: no surrogates there.
URL_TEXT = [t for t in HOSTILE_TEXT if not any("\ud800" <= c <= "\udfff" for c in t) and len(t) < 1000]
HEADER_TEXT = ["²", '"³"', "W/¹", "9" * 30, "9" * 5000, "-1", "1.0", "ÿ"]  # the client refuses controls
HOSTILE_NUMBERS: list[Any] = [2**64, -(2**63) - 1, 10**30, 1e308, -0.0, 123, 0, True]


def nested(depth: int, leaf: Any, kind: str) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if kind == "object" else [leaf]
    return leaf


NEW_KEY = "hostile"  # a slot for a key the schema never named


def _slots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value a hostile value could go: each node, and a new key per object."""
    slots: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            slots.extend(_slots(v, (*path, k)))
        slots.append((*path, NEW_KEY))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            slots.extend(_slots(v, (*path, i)))
    return [*slots, path]


def _put(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = new if len(path) == 1 else _put(copy[path[0]], path[1:], new)
    return copy


def _documented_examples(context: Any) -> list[Any]:
    """The body examples the OpenAPI document gives (intake's interactions): valid bodies, so one
    hostile value in them reaches past validation into the handlers, where the old 500s were."""
    operation = getattr(context, "operation", None)
    if operation is None:
        return []
    try:
        schema = operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = operation.schema.raw_schema["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    except (KeyError, TypeError, AttributeError):
        return []
    examples = schema.get("examples")
    return list(examples) if isinstance(examples, list) else []


@schemathesis.hook
def before_generate_body(context: Any, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Random bodies are refused early (the main fuzz test covers them): start from the examples.
    examples = _documented_examples(context)
    return st.sampled_from(examples) if examples else strategy


# Which slot and value come next, per operation and part: a walk through every slot with every
# kind of value. Hypothesis draws small choices far more often than others (the first slot of a
# sampled_from, a Random seeded with 0), so it would put most hostile values in one place.
_turns: "dict[str, itertools.count[int]]" = defaultdict(itertools.count)


def _next(context: Any, part: str) -> int:
    operation = getattr(context, "operation", None)
    return next(_turns[f"{getattr(operation, 'label', '')} {part}"])


def _pick(turn: int, places: list[Any], values: list[Any]) -> tuple[Any, Any]:
    # every place gets the first value, then every place the second...: the likeliest to break first
    return places[turn % len(places)], values[(turn // len(places)) % len(values)]


HOSTILE_EXAMPLES: list[Any] = [
    "a\udfffb",
    nested(300, "x", "object"),
    "a\x00b",
    2**64,
    {"\ud800": 1, "a\x00": 2},
    123,
    "\x1b[2J",
    nested(700, 1, "list"),
    {f"k{n}": n for n in range(300)},
    {"k" * 200: 1},
    *HOSTILE_TEXT,
    *HOSTILE_NUMBERS,
]


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    place, value = _pick(_next(context, "body"), _slots(body), HOSTILE_EXAMPLES)
    return _put(body, place, value)


def _one_value(context: Any, part: str, values: dict[str, Any] | None, texts: list[str]) -> dict[str, Any] | None:
    if not values:
        return values
    name, text = _pick(_next(context, part), sorted(values), texts)
    return {**values, name: text}


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if query and "timeout_ms" in query:  # a timeline waiting for an event that never comes: not here
        query = {**query, "timeout_ms": 0}
    return _one_value(context, "query", query, URL_TEXT)


@schemathesis.hook
def map_path_parameters(context: Any, path: dict[str, Any] | None) -> dict[str, Any] | None:
    return _one_value(context, "path", path, [t for t in URL_TEXT if t and "/" not in t])


@schemathesis.hook
def map_headers(context: Any, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    named = {k: v for k, v in (headers or {}).items() if k in ("If-Match", "Idempotency-Key")}
    hostile = _one_value(context, "headers", named, HEADER_TEXT)
    return {**(headers or {}), **(hostile or {})} if named else headers
