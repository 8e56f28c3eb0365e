"""The wire contract: CloudEvents Kafka binding checked against the official SDK, generated
schemas checked for drift, and every schema checked against its own git history for changes
that would break a consumer of an older version."""

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from eventkit.envelope import DecodeError, Envelope, from_kafka, new_event, to_kafka
from hypothesis import given
from hypothesis import strategies as st

from contracts import generate
from contracts.compat import breaking_changes
from contracts.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def sample() -> Envelope:
    return new_event(
        "crm.interaction.recorded.v1",
        "7a1c7c1e-0000-4000-8000-000000000001",
        {"channel": "web", "content": "héllo", "metadata": {"n": 1}},
        "/crm/intake",
        TP,
        time=datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=UTC),
    )


def test_our_messages_decode_with_the_cloudevents_sdk() -> None:
    env = sample()
    env.dataschema = "https://crm.example/schemas/crm.interaction.recorded.v1.json"
    key, value, headers = to_kafka(env)
    event = ce_kafka.from_binary_event(ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value))
    attrs = event.get_attributes()
    assert attrs["specversion"] == "1.0"
    assert attrs["id"] == env.id
    assert attrs["source"] == "/crm/intake"
    assert attrs["type"] == "crm.interaction.recorded.v1"
    assert attrs["subject"] == env.subject
    assert attrs["time"] == env.time
    assert attrs["traceparent"] == TP
    assert attrs["dataschema"] == env.dataschema
    assert attrs["datacontenttype"] == "application/json"
    assert event.get_data() == env.data
    assert key == env.subject.encode()


def test_sdk_messages_decode_with_ours() -> None:
    event = CloudEvent(
        attributes={
            "id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "source": "/outside/team",
            "type": "crm.interaction.recorded.v1",
            "subject": "cust-9",
            "time": datetime(2026, 5, 1, 9, 30, tzinfo=UTC),
            "traceparent": TP,
            "datacontenttype": "application/json",
            "dataschema": "https://outside.example/hello.json",
        },
        data={"hello": "world"},
    )
    message = ce_kafka.to_binary_event(event, key_mapper=lambda e: e.get_subject())
    key = message.key.encode() if isinstance(message.key, str) else message.key  # on the wire it is bytes
    env = from_kafka(key, message.value, list(message.headers.items()))
    assert (env.id, env.source, env.type, env.subject) == (
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "/outside/team",
        "crm.interaction.recorded.v1",
        "cust-9",
    )
    assert env.time == datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    assert env.traceparent == TP
    assert env.dataschema == "https://outside.example/hello.json"
    assert env.data == {"hello": "world"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    subject=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40),
    time=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)),
)
def test_round_trip_keeps_every_attribute(data: dict, subject: str, time: datetime) -> None:
    env = new_event("crm.x.v1", subject, data, "/crm/test", TP, time=time)
    key, value, headers = to_kafka(env)
    assert from_kafka(key, value, headers) == env


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: [x for x in h if x[0] != "ce_id"], "missing_attribute"),
        (lambda h: [(k, b"0.3" if k == "ce_specversion" else v) for k, v in h], "not_cloudevent"),
        (lambda h: [(k, b"not-a-uuid" if k == "ce_id" else v) for k, v in h], "bad_id"),
        (lambda h: [(k, b"yesterday" if k == "ce_time" else v) for k, v in h], "bad_time"),
        (lambda h: [(k, b"2026-01-01T00:00:00" if k == "ce_time" else v) for k, v in h], "bad_time"),
        (lambda h: [(k, b"\xff\xfe" if k == "ce_type" else v) for k, v in h], "bad_header"),
    ],
)
def test_broken_headers_are_rejected_with_a_reason(mutate, reason: str) -> None:
    key, value, headers = to_kafka(sample())
    with pytest.raises(DecodeError) as info:
        from_kafka(key, value, mutate(headers))
    assert info.value.reason == reason


def test_broken_key_and_value_are_rejected_with_a_reason() -> None:
    key, value, headers = to_kafka(sample())
    for k, v, reason in [
        (b"other", value, "key_mismatch"),
        (key, b"[1]", "bad_json"),
        (key, b"{", "bad_json"),
    ]:
        with pytest.raises(DecodeError) as info:
            from_kafka(k, v, headers)
        assert info.value.reason == reason


def test_checked_in_schemas_and_asyncapi_match_the_models() -> None:
    assert generate.main(["--check"]) == 0, "run `make contracts` and commit the result"
    asyncapi = generate.ASYNCAPI.read_text()
    for name in REGISTRY:
        assert name in asyncapi
        assert (generate.SCHEMA_DIR / f"{name}.json").exists()


def test_compat_checker_catches_breaking_changes() -> None:
    old = generate.schema_for("crm.interaction.recorded.v1")
    assert breaking_changes(old, old) == []
    added = json.loads(json.dumps(old))
    added["properties"]["new_optional"] = {"type": "string"}
    assert breaking_changes(old, added) == []
    removed = json.loads(json.dumps(old))
    del removed["properties"]["kind"]
    removed["required"].remove("kind")
    assert "field 'kind' was removed" in breaking_changes(old, removed)
    widened = json.loads(json.dumps(old))
    widened["properties"]["channel"]["enum"].append("pigeon")
    assert breaking_changes(old, widened) == ["field 'channel' changed its schema"]


def _history(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    out = subprocess.run(
        ["git", "log", "--format=%H", "--", rel], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return [line for line in out.stdout.split() if line]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git history")
def test_no_schema_breaks_a_consumer_of_any_earlier_version() -> None:
    checked = 0
    for name in REGISTRY:
        path = generate.SCHEMA_DIR / f"{name}.json"
        current = generate.schema_for(name)
        for commit in _history(path):
            shown = subprocess.run(
                ["git", "show", f"{commit}:{path.relative_to(ROOT).as_posix()}"],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )  # fmt: skip
            problems = breaking_changes(json.loads(shown.stdout), current)
            assert problems == [], f"{name} breaks consumers of {commit[:8]}: {problems}; publish a new version"
            checked += 1
    assert checked >= len(REGISTRY)


def test_services_import_event_names_from_contracts_instead_of_spelling_them() -> None:
    root = Path(__file__).resolve().parents[2]
    spelled = {
        (str(path.relative_to(root)), name)
        for path in (root / "services").rglob("*.py")
        if "tests" not in path.parts
        for name in re.findall(r"[\"'](crm\.[a-z_]+\.[a-z_.]+\.v\d+)[\"']", path.read_text())
    }
    assert spelled == set(), sorted(spelled)
