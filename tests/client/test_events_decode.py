"""crm_client.events.decode and the unsealing of crm_client.unseal against what the services
really produce (eventkit's Kafka binding and sealing), and against broken messages."""

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from crm_client import event_types
from crm_client.events import DecodeError, decode
from crm_client.unseal import ERASED, unseal_data
from eventkit import crypto
from eventkit.envelope import new_event, to_kafka

from contracts.events import INTERACTION_RECORDED, PERSONAL_FIELDS
from contracts.registry import REGISTRY, schema_id

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CUSTOMER = "7a1c7c1e-0000-4000-8000-000000000001"


def interaction() -> dict[str, Any]:
    return {
        "customer_id": CUSTOMER,
        "channel": "chat",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": "2026-05-01T09:30:15.123456Z",
        "content": "my router is broken",
        # a key with "." and "~" (escaped in the sealed path), a list, and a key kept readable
        "metadata": {"a.b~c": "odd key", "notes": ["call after six"], "score": "3"},
    }


def message(
    data: dict[str, Any], type: str = INTERACTION_RECORDED, dataschema: str = ""
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    env = new_event(type, CUSTOMER, data, "/crm/intake", TP, time=datetime(2026, 5, 1, 9, 31, tzinfo=UTC))
    env.dataschema = dataschema
    return to_kafka(env)


def test_decode_gives_attributes_and_typed_data() -> None:
    key, value, headers = message(interaction(), dataschema=schema_id(INTERACTION_RECORDED))
    event = decode(key, value, headers)
    assert (event.type, event.source, event.subject, event.customer_id) == (
        INTERACTION_RECORDED,
        "/crm/intake",
        CUSTOMER,
        CUSTOMER,
    )
    assert str(uuid.UUID(event.id)) == event.id
    assert event.time == datetime(2026, 5, 1, 9, 31, tzinfo=UTC)
    assert (event.specversion, event.datacontenttype) == ("1.0", "application/json")
    assert event.dataschema == "https://crm.example/schemas/crm.interaction.recorded.v1.json"
    assert event.traceparent == TP
    assert isinstance(event.data, event_types.InteractionRecorded)
    assert event.data.channel == "chat"
    assert event.data.occurred_at == datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=UTC)
    assert event.raw_data == json.loads(value)


def test_a_message_made_by_the_cloudevents_sdk_decodes() -> None:
    sdk_event = CloudEvent(
        attributes={
            "id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "source": "/crm/intake",
            "type": INTERACTION_RECORDED,
            "subject": CUSTOMER,
            "time": datetime(2026, 5, 1, 9, 30, tzinfo=UTC),
            "datacontenttype": "application/json",
            "dataschema": schema_id(INTERACTION_RECORDED),
            "traceparent": TP,
        },
        data=interaction(),
    )
    message = ce_kafka.to_binary_event(sdk_event, key_mapper=lambda e: e.get_subject())
    event = decode(message.key, message.value, dict(message.headers))
    assert (event.id, event.dataschema, event.traceparent) == (
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        schema_id(INTERACTION_RECORDED),
        TP,
    )
    assert isinstance(event.data, event_types.InteractionRecorded)
    assert event.data.content == "my router is broken"


def test_headers_as_a_mapping_of_text_decode_too() -> None:
    key, value, headers = message(interaction())
    event = decode(key.decode(), value, {name: raw.decode() for name, raw in headers})
    assert isinstance(event.data, event_types.InteractionRecorded)


def test_every_registered_type_has_its_model_and_schema_id() -> None:
    assert set(event_types.DATA_MODELS) == set(REGISTRY)
    assert {name: schema_id(name) for name in REGISTRY} == event_types.SCHEMA_IDS
    assert {name: t.topic for name, t in REGISTRY.items()} == event_types.TOPICS


def test_an_unknown_type_passes_through_as_a_dict() -> None:
    key, value, headers = message({"anything": [1, 2]}, type="crm.somebody_else.v7")
    event = decode(key, value, headers)
    assert event.data == {"anything": [1, 2]}
    assert event.dataschema is None  # as in events from before dataschema


def test_fields_unknown_to_this_version_are_kept() -> None:
    key, value, headers = message({**interaction(), "added_later": "x"})
    data = decode(key, value, headers).data
    assert isinstance(data, event_types.InteractionRecorded)
    assert data.model_extra == {"added_later": "x"}


def with_header(headers: list[tuple[str, bytes]], name: str, value: bytes | None) -> list[tuple[str, bytes]]:
    out = [(n, v) for n, v in headers if n != name]
    return out if value is None else [*out, (name, value)]


GOOD = message(interaction())


@pytest.mark.parametrize(
    ("key", "value", "headers", "reason"),
    [
        (GOOD[0], GOOD[1], [], "not_cloudevent"),
        (GOOD[0], GOOD[1], None, "not_cloudevent"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "ce_specversion", b"0.3"), "not_cloudevent"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "ce_id", None), "missing_attribute"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "ce_type", b""), "missing_attribute"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "ce_id", b"not-a-uuid"), "bad_id"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "ce_time", b"yesterday"), "bad_time"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "ce_time", b"2026-01-01T00:00:00"), "bad_time"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "ce_source", b"\xff\xfe"), "bad_header"),
        (b"someone-else", GOOD[1], GOOD[2], "key_mismatch"),
        (GOOD[0], None, GOOD[2], "no_data"),
        (GOOD[0], b"", GOOD[2], "no_data"),
        (GOOD[0], b"{", GOOD[2], "bad_json"),
        (GOOD[0], b"\xff{}", GOOD[2], "bad_json"),
        (GOOD[0], b"[1, 2]", GOOD[2], "bad_json"),
        (GOOD[0], GOOD[1], with_header(GOOD[2], "content-type", b"application/avro"), "bad_data"),
        (GOOD[0], json.dumps({**interaction(), "channel": "pigeon"}).encode(), GOOD[2], "bad_data"),
        (GOOD[0], json.dumps({"customer_id": CUSTOMER}).encode(), GOOD[2], "bad_data"),
    ],
)
def test_what_is_not_our_cloudevent_is_refused_with_a_reason(
    key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None, reason: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(key, value, headers)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def sealed_interaction(data_key: bytes) -> dict[str, Any]:
    return crypto.seal(interaction(), PERSONAL_FIELDS[INTERACTION_RECORDED], CUSTOMER, data_key)


def test_sealed_fields_open_with_the_customers_key() -> None:
    data_key = crypto.new_data_key()
    sealed = sealed_interaction(data_key)
    assert sealed["content"] == "[sealed]" and sealed["metadata"]["notes"] == ["[sealed]"]
    key, value, headers = message(sealed)
    event = decode(key, value, headers)
    assert event.sealed
    opened = unseal_data(event.raw_data, data_key)
    assert opened == interaction()  # every sealed field back, readable ones untouched, no "sealed"


def test_without_the_key_sealed_fields_read_erased() -> None:
    sealed = sealed_interaction(crypto.new_data_key())
    opened = unseal_data(sealed, None)
    assert opened["content"] == ERASED
    assert opened["metadata"] == {"a.b~c": ERASED, "notes": [ERASED], "score": "3"}


def test_a_token_under_another_key_or_moved_reads_erased() -> None:
    data_key = crypto.new_data_key()
    sealed = sealed_interaction(data_key)
    assert unseal_data(sealed, crypto.new_data_key())["content"] == ERASED
    moved = copy.deepcopy(sealed)
    fields = moved["sealed"]["fields"]
    fields["content"] = fields["metadata.notes.0"]  # a token moved to another field does not open there
    fields["metadata.notes.0"] = "v1.!!!not base64"
    opened = unseal_data(moved, data_key)
    assert opened["content"] == ERASED and opened["metadata"]["notes"] == [ERASED]
    assert sealed["content"] == "[sealed]"  # the input is left as it was
