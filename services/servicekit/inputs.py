"""Input that parses but must not be accepted, the same rule in every service (docs/limits.md).

- Text: no lone surrogates (no encoder can write them: UTF-8, PostgreSQL, orjson all refuse) and
  no NUL or other control characters (PostgreSQL cannot store NUL in text; the rest only ever
  come from broken or hostile clients). Free text (`SafeText`) may hold tab, newline and
  carriage return; one-line values (`SafeLine`: ids, names, owners) may not.
- Date-times: RFC 3339 text with an offset only. Pydantic also reads numbers (and numeric text)
  as Unix seconds, so `occurred_at: 123` would be 1970-01-01T00:02:03Z.
- Free-form JSON (interaction metadata): bounded depth, key count and key length, keys and
  strings safe text, numbers finite and within 64 bits (what orjson and JSON readers elsewhere
  can carry), so a value accepted here can always be stored, encoded and read back.
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, AwareDatetime, BeforeValidator
from pydantic_core import PydanticCustomError

# C0 controls but tab, LF, CR; DEL and the C1 controls; every surrogate code point (a pair never
# reaches Python as two code points, so any surrogate here is a lone one).
_UNSAFE_FREE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def unsafe_reason(text: str, *, one_line: bool = False) -> str | None:
    """Why this text is refused, or None when it is fine."""
    found = (_UNSAFE_LINE if one_line else _UNSAFE_FREE).search(text)
    if found is None:
        return None
    char = found.group()
    if "\ud800" <= char <= "\udfff":
        return f"contains a lone surrogate (U+{ord(char):04X}) at character {found.start()}"
    if char == "\x00":
        return f"contains NUL at character {found.start()}"
    return f"contains the control character U+{ord(char):04X} at character {found.start()}"


def _safe(text: str, one_line: bool) -> str:
    reason = unsafe_reason(text, one_line=one_line)
    if reason is not None:
        raise PydanticCustomError("unsafe_text", reason)
    return text


def _safe_free(text: str) -> str:
    return _safe(text, one_line=False)


def _safe_line(text: str) -> str:
    return _safe(text, one_line=True)


SafeText = Annotated[str, AfterValidator(_safe_free)]
SafeLine = Annotated[str, AfterValidator(_safe_line)]

# What a date-time must look like before it is parsed: a date, a T (or space) and a time.
_RFC3339_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}", re.ASCII)


def _rfc3339_only(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339_START.match(value):
        return value
    raise PydanticCustomError(
        "datetime_format", "give an RFC 3339 date-time with an offset, e.g. 2026-11-30T09:15:00+01:00"
    )


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 8  # objects and arrays inside the top-level object
    max_keys: int = 256  # object keys in the whole tree
    max_key_chars: int = 128


class JsonTooComplex(ValueError):
    """`field` (dotted, as the client wrote it) and `reason`, for a 422."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _walk(value: Any, path: str, depth: int) -> Iterator[tuple[Any, str, int, str | None]]:
    """Every node as (value, path, depth, key), depth first, without recursion (no stack limit)."""
    stack: list[tuple[Any, str, int, str | None]] = [(value, path, depth, None)]
    while stack:
        node = stack.pop()
        yield node
        item, where, level, _ = node
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}", level + 1, k) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{where}.{i}", level + 1, None) for i, v in reversed(list(enumerate(item))))


def check_json_tree(tree: dict[str, Any], field: str, limits: JsonLimits) -> None:
    """Refuse (JsonTooComplex) a free-form object over the limits or with values that cannot be
    stored as given. `tree` itself is depth 1: {"a": {"b": 1}} has depth 2."""
    keys = 0
    for value, path, depth, key in _walk(tree, field, 0):
        if key is not None:
            keys += 1
            if keys > limits.max_keys:
                raise JsonTooComplex(field, f"more than {limits.max_keys} keys in all")
            if len(key) > limits.max_key_chars:
                parent = path[: len(path) - len(key) - 1]
                raise JsonTooComplex(parent, f"a key is longer than {limits.max_key_chars} characters")
            if (reason := unsafe_reason(key, one_line=True)) is not None:
                raise JsonTooComplex(path[: len(path) - len(key) - 1], f"a key {reason}")
        if isinstance(value, dict | list):
            if depth + 1 > limits.max_depth:
                raise JsonTooComplex(path, f"nested deeper than {limits.max_depth} levels")
        elif isinstance(value, str):
            if (reason := unsafe_reason(value)) is not None:
                raise JsonTooComplex(path, reason)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise JsonTooComplex(path, "integer out of the 64-bit range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise JsonTooComplex(path, "not a finite number")
        else:  # pragma: no cover - JSON has no other types
            raise JsonTooComplex(path, "not a JSON value")


def origin(url: str) -> str:
    """An http(s) origin as written in settings (a trailing / is dropped); ValueError otherwise."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ValueError(f"not an http(s) origin like https://crm.example.com:8443: {url!r}")
    if parts.username or parts.password:
        raise ValueError(f"an origin carries no user or password: {url!r}")
    return url


Origin = Annotated[str, AfterValidator(origin)]
