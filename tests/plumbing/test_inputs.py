"""servicekit.inputs: the rules for input that parses but must not be accepted (no I/O)."""

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from servicekit.http import _url_problem
from servicekit.inputs import (
    INT64_MAX,
    INT64_MIN,
    JsonLimits,
    JsonTooComplex,
    Rfc3339,
    SafeLine,
    SafeText,
    check_json_tree,
    unsafe_reason,
)

FREE = TypeAdapter(SafeText)
LINE = TypeAdapter(SafeLine)
WHEN = TypeAdapter(Rfc3339)


@pytest.mark.parametrize(
    "text",
    ["\ud800", "a\udfffb", "\x00", "a\x00", "\x01", "\x1b[31m", "\x7f", "\x85", "\x9f", "a\x0bb", "\x0c"],
)
def test_unsafe_text_is_refused_in_free_text_and_lines(text: str) -> None:
    for adapter in (FREE, LINE):
        with pytest.raises(ValidationError) as info:
            adapter.validate_python(text)
        assert info.value.errors()[0]["type"] == "unsafe_text"


@pytest.mark.parametrize("text", ["a\tb", "line\nline", "crlf\r\n", "héllo wörld", "emoji 👩‍💻", "\u200b\ufeff", ""])
def test_free_text_keeps_tab_newline_and_all_printable_unicode(text: str) -> None:
    assert FREE.validate_python(text) == text


@pytest.mark.parametrize("text", ["a\tb", "a\nb", "a\rb"])
def test_one_line_values_refuse_tab_and_line_breaks(text: str) -> None:
    with pytest.raises(ValidationError):
        LINE.validate_python(text)


def test_the_reason_says_what_and_where() -> None:
    assert unsafe_reason("ab\x00") == "contains NUL at character 2"
    assert unsafe_reason("\ud83d") == "contains a lone surrogate (U+D83D) at character 0"
    assert unsafe_reason("x\x07") == "contains the control character U+0007 at character 1"
    assert unsafe_reason("fine\n") is None
    assert unsafe_reason("fine\n", one_line=True) == "contains the control character U+000A at character 4"


@pytest.mark.parametrize("value", [123, 0, 1.5e9, -1, "123", "1700000000", "1e9", True, "2026-11-30", "today", ""])
def test_dates_must_be_rfc3339_text_not_numbers(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        WHEN.validate_python(value)
    assert info.value.errors()[0]["type"] in ("datetime_format", "timezone_aware")


def test_rfc3339_text_with_an_offset_is_read() -> None:
    assert WHEN.validate_python("2026-11-30T09:15:00+01:00") == datetime(2026, 11, 30, 8, 15, tzinfo=UTC)
    assert WHEN.validate_python("2026-11-30 08:15:00Z") == datetime(2026, 11, 30, 8, 15, tzinfo=UTC)
    with pytest.raises(ValidationError):  # no offset: ambiguous
        WHEN.validate_python("2026-11-30T09:15:00")
    with pytest.raises(ValidationError):  # non-ASCII digits
        WHEN.validate_python("\uff12\uff10\uff12\uff16-11-30T09:15:00Z")


LIMITS = JsonLimits(max_depth=3, max_keys=5, max_key_chars=4)


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep, itself included: nested(1) == {"k": 1}."""
    tree: dict[str, Any] = {"k": 1}
    for _ in range(depth - 1):
        tree = {"k": tree}
    return tree


def refusal(tree: dict[str, Any], limits: JsonLimits = LIMITS) -> tuple[str, str]:
    with pytest.raises(JsonTooComplex) as info:
        check_json_tree(tree, "metadata", limits)
    return info.value.field, info.value.reason


def test_depth_up_to_the_limit_is_accepted_one_more_is_not() -> None:
    check_json_tree(nested(3), "metadata", LIMITS)
    assert refusal(nested(4)) == ("metadata.k.k.k", "nested deeper than 3 levels")
    assert refusal({"a": [[{"b": 1}]]}) == ("metadata.a.0.0", "nested deeper than 3 levels")


def test_keys_are_counted_across_the_whole_tree() -> None:
    deep_enough = JsonLimits(max_depth=8, max_keys=5, max_key_chars=4)
    check_json_tree({"a": 1, "b": {"c": 1, "d": [{"e": 1}]}}, "metadata", deep_enough)  # five keys
    too_many = {"a": 1, "b": {"c": 1, "d": [{"e": 1, "f": 2}]}}
    assert refusal(too_many, deep_enough) == ("metadata", "more than 5 keys in all")


def test_long_and_unsafe_keys_are_refused_naming_their_object() -> None:
    check_json_tree({"abcd": 1}, "metadata", LIMITS)
    assert refusal({"x": {"abcde": 1}}) == ("metadata.x", "a key is longer than 4 characters")
    assert refusal({"a\x00": 1}) == ("metadata", "a key contains NUL at character 1")
    assert refusal({"\ud800": 1})[1] == "a key contains a lone surrogate (U+D800) at character 0"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\x00", "contains NUL at character 1"),
        ("\udc00", "contains a lone surrogate (U+DC00) at character 0"),
        (INT64_MAX + 1, "integer out of the 64-bit range"),
        (INT64_MIN - 1, "integer out of the 64-bit range"),
        (10**400, "integer out of the 64-bit range"),
        (math.inf, "not a finite number"),
        (math.nan, "not a finite number"),
    ],
)
def test_values_that_cannot_be_stored_as_given_are_refused(value: Any, reason: str) -> None:
    assert refusal({"a": [value]}) == ("metadata.a.0", reason)


def test_ordinary_values_pass() -> None:
    tree = {"s": "line\nline\ttab", "i": INT64_MAX, "n": INT64_MIN, "f": 1.5, "b": True, "z": None}
    check_json_tree(tree, "metadata", JsonLimits())


def test_a_tree_deeper_than_python_recursion_is_refused_not_crashed() -> None:
    tree: Any = []
    for _ in range(100_000):
        tree = [tree]
    assert refusal({"a": tree}, JsonLimits())[1] == "nested deeper than 8 levels"


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/v1/customers/a\x00b", b"", "path"),
        ("/v1/cases/\x01", b"", "path"),
        ("/v1/customers", b"q=abcd%00", "query.q"),
        ("/v1/customers", b"limit=1&name=a%1Bb", "query.name"),
        ("/v1/customers", b"q=a\x7fb", "query.q"),
    ],
)
def test_urls_with_control_characters_are_refused(path: str, query: bytes, field: str) -> None:
    problem = _url_problem(path, query)
    assert problem is not None and problem[0] == field


@pytest.mark.parametrize("query", [b"", b"q=abcd", b"q=%E2%80%A6", b"name=Ana%20Garc%C3%ADa", b"q=%ED%A0%80"])
def test_ordinary_urls_pass(query: bytes) -> None:
    assert _url_problem("/v1/customers/0f386d04", query) is None
