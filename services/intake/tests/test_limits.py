"""The request-level limits of an interaction: metadata depth, key count and key length as
settings with documented defaults, and the text and date rules (no I/O)."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from intake import api, domain
from intake.settings import IntakeSettings


def settings(**env: Any) -> IntakeSettings:
    return IntakeSettings(master_key="A" * 44, **env)


def interaction(**fields: Any) -> dict[str, Any]:
    return {
        "customer": {"email": "ana@example.com"},
        "channel": "chat",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": datetime.now(UTC).isoformat(),
        **fields,
    }


def item(body: dict[str, Any], config: IntakeSettings | None = None) -> Any:
    config = config or settings()
    model = api.InteractionIn.model_validate(body)
    return api._to_item(model, "US", api.metadata_limits(config))


def refused(body: dict[str, Any], config: IntakeSettings | None = None) -> tuple[str, str]:
    with pytest.raises(domain.InvalidInput) as info:
        item(body, config)
    assert not isinstance(info.value, domain.TooLarge)  # a 422, not a 413
    return info.value.field, info.value.reason


def deep(levels: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"k": "v"}
    for _ in range(levels - 1):
        tree = {"k": tree}
    return tree


def test_the_defaults_are_8_levels_256_keys_128_characters() -> None:
    limits = api.metadata_limits(settings())
    assert (limits.max_depth, limits.max_keys, limits.max_key_chars) == (8, 256, 128)


def test_metadata_up_to_the_defaults_is_accepted() -> None:
    item(interaction(metadata=deep(8)))
    item(interaction(metadata={f"k{n}": n for n in range(256)}))
    item(interaction(metadata={"k" * 128: 1}))


def test_metadata_over_the_defaults_is_refused_naming_the_field() -> None:
    assert refused(interaction(metadata=deep(9))) == ("metadata" + ".k" * 8, "nested deeper than 8 levels")
    assert refused(interaction(metadata={f"k{n}": n for n in range(257)})) == ("metadata", "more than 256 keys in all")
    assert refused(interaction(metadata={"a": {"k" * 129: 1}})) == ("metadata.a", "a key is longer than 128 characters")


def test_the_limits_are_settings() -> None:
    strict = settings(metadata_max_depth=2, metadata_max_keys=3, metadata_max_key_chars=5)
    assert refused(interaction(metadata=deep(3)), strict)[1] == "nested deeper than 2 levels"
    assert refused(interaction(metadata={"a": 1, "b": 2, "c": 3, "d": 4}), strict)[1] == "more than 3 keys in all"
    assert refused(interaction(metadata={"abcdef": 1}), strict)[1] == "a key is longer than 5 characters"


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"a": "\ud800"}, "metadata.a"),
        ({"a": ["ok", "x\x00y"]}, "metadata.a.1"),
        ({"a\x00": 1}, "metadata"),
        ({"n": 2**64}, "metadata.n"),
        ({"n": float("nan")}, "metadata.n"),
    ],
)
def test_metadata_values_that_cannot_be_stored_are_refused(metadata: dict[str, Any], field: str) -> None:
    assert refused(interaction(metadata=metadata))[0] == field


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"content": "a\ud800b"}, ("content",)),
        ({"content": "bell\x07"}, ("content",)),
        ({"client_event_id": "id\x00"}, ("client_event_id",)),
        ({"customer": {"external": [{"channel": "web", "id": "x\x1b"}]}}, ("customer", "external", 0, "id")),
        ({"occurred_at": 123}, ("occurred_at",)),
        ({"occurred_at": "1700000000"}, ("occurred_at",)),
    ],
)
def test_unsafe_text_and_numeric_dates_fail_validation(fields: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        api.InteractionIn.model_validate(interaction(**fields))
    assert info.value.errors()[0]["loc"] == loc


def test_free_text_keeps_tab_and_newlines() -> None:
    item(interaction(content="line one\n\tline two\r\n", metadata={"note": "a\tb"}))
