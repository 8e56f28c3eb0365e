"""Read the crm-backbone's topics: decode a Kafka message into a CloudEvent with typed data.

Every event is a CloudEvent 1.0 in the Kafka protocol binding's binary mode: the attributes
travel as `ce_*` headers, the JSON data is the message value and the key is the customer id
(the `subject`). `decode` turns a message into an `Event`; its `data` is the event type's model
from `crm_client.event_types` (generated from the JSON Schemas), or a plain dict for a type this
version does not know. Personal fields arrive sealed; `crm_client.unseal.Unsealer` opens them.

Only the standard library and pydantic: decoding needs no key and no network.
"""

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from crm_client.event_types import DATA_MODELS, SCHEMA_IDS, TOPICS, EventData

__all__ = [
    "DATA_MODELS",
    "SCHEMA_IDS",
    "TOPICS",
    "DecodeError",
    "Event",
    "EventData",
    "decode",
    "typed_data",
]

SPECVERSION = "1.0"
# The headers of the binding that are attributes of their own; any other ce_* header is an extension.
_ATTRIBUTES = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_dataschema")
_REQUIRED = ("ce_id", "ce_source", "ce_type", "ce_time", "ce_subject")

HeaderValue = bytes | str
Headers = Sequence[tuple[str, HeaderValue]] | Mapping[str, HeaderValue]


class DecodeError(ValueError):
    """A message that is not one of our CloudEvents. `reason` is machine-readable: not_cloudevent,
    missing_attribute, bad_header, bad_id, bad_time, key_mismatch, no_data, bad_json, bad_data."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Event:
    """One event: its CloudEvents attributes and its data.

    `data` is the type's model (an `EventData` from `crm_client.event_types`) for the types this
    version knows, a plain dict for any other. `raw_data` is the same data as the JSON object it
    was (sealed fields as they travel, or opened once `Unsealer.unseal` returned this event)."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: EventData | dict[str, Any]
    raw_data: dict[str, Any]
    specversion: str = SPECVERSION
    datacontenttype: str | None = None
    # The `$id` of the data's JSON Schema; None in events published before events carried it.
    dataschema: str | None = None
    # W3C trace context of the request that produced the event (our `traceparent` extension).
    traceparent: str | None = None
    # Any other `ce_*` header, by attribute name (without the `ce_` prefix).
    extensions: dict[str, str] = field(default_factory=dict)

    @property
    def customer_id(self) -> str:
        """The customer the event is about (the subject; also the message key)."""
        return self.subject

    @property
    def sealed(self) -> bool:
        """Whether personal fields in the data are still sealed ("[sealed]" in place)."""
        return isinstance(self.raw_data.get("sealed"), dict)


def _pairs(headers: Headers | None) -> Iterable[tuple[str, HeaderValue]]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def _text(name: str, raw: object) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes | bytearray):
        try:
            return bytes(raw).decode()
        except UnicodeDecodeError as exc:
            raise DecodeError("bad_header", f"{name} is not UTF-8") from exc
    raise DecodeError("bad_header", f"{name} is neither bytes nor text")


def typed_data(event_type: str, data: dict[str, Any]) -> EventData | dict[str, Any]:
    """The data as its type's model, or the dict itself for a type this version does not know."""
    model = DATA_MODELS.get(event_type)
    if model is None:
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DecodeError("bad_data", f"data does not fit {event_type}: {exc.error_count()} error(s)") from exc


def decode(key: bytes | str | None, value: bytes | str | None, headers: Headers | None) -> Event:
    """The event in a Kafka message (key, value and headers as aiokafka gives them: headers a list
    of (name, bytes) pairs, or a mapping). Raises DecodeError, with a `reason`, for anything else."""
    attrs: dict[str, str] = {}
    extensions: dict[str, str] = {}
    content_type: str | None = None
    for name, raw in _pairs(headers):
        lowered = name.lower()
        if lowered == "content-type":
            content_type = _text(name, raw)
        elif lowered.startswith("ce_"):
            if lowered in _ATTRIBUTES:
                attrs[lowered] = _text(name, raw)
            else:
                extensions[lowered[3:]] = _text(name, raw)
    if attrs.get("ce_specversion") != SPECVERSION:
        raise DecodeError("not_cloudevent", "ce_specversion missing or not 1.0")
    for required in _REQUIRED:
        if not attrs.get(required):
            raise DecodeError("missing_attribute", required)
    try:
        event_id = str(uuid.UUID(attrs["ce_id"]))
    except ValueError as exc:
        raise DecodeError("bad_id", "ce_id is not a UUID") from exc
    try:
        time = datetime.fromisoformat(attrs["ce_time"])
    except ValueError as exc:
        raise DecodeError("bad_time", "ce_time is not RFC 3339") from exc
    if time.tzinfo is None:
        raise DecodeError("bad_time", "ce_time has no offset")
    subject = attrs["ce_subject"]
    if key is not None:
        key_text = key if isinstance(key, str) else bytes(key).decode(errors="replace")
        if key_text != subject:
            raise DecodeError("key_mismatch", "the message key is not ce_subject")
    if value is None or len(value) == 0:
        raise DecodeError("no_data", "empty value")
    if content_type is not None and content_type.split(";")[0].strip() != "application/json":
        raise DecodeError("bad_data", f"content type {content_type} is not JSON")
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise DecodeError("bad_json", str(exc)) from exc
    if not isinstance(data, dict):
        raise DecodeError("bad_json", "data is not a JSON object")
    return Event(
        id=event_id,
        source=attrs["ce_source"],
        type=attrs["ce_type"],
        subject=subject,
        time=time.astimezone(UTC),
        data=typed_data(attrs["ce_type"], data),
        raw_data=data,
        datacontenttype=content_type,
        dataschema=attrs.get("ce_dataschema"),
        traceparent=extensions.pop("traceparent", None),
        extensions=extensions,
    )
