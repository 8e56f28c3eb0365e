"""Which messages a consumer applies: a CloudEvent of a known type with a valid payload, read from
its type's own topic, passing every check the caller adds. Anything else is a dead letter.

The event types are the caller's (a contract registry): eventkit names none.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ValidationError

from eventkit.deadletter import DeadLetter
from eventkit.envelope import DecodeError, Envelope, from_kafka


class Message(Protocol):
    """What a batch is made of: an aiokafka ConsumerRecord, or anything with its fields."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None: ...


# A check a service passes in (a signature verifier, say): raises DecodeError for an event that
# must not be applied; it is dead-lettered with that reason like an undecodable one.
Check = Callable[[Envelope], None]


def validate(env: Envelope, schemas: Mapping[str, type[BaseModel]]) -> None:
    """Known type (a key of `schemas`) and a payload that matches its model, or DecodeError."""
    model = schemas.get(env.type)
    if model is None:
        raise DecodeError("unknown_type", env.type)
    try:
        model.model_validate(env.data)
    except ValidationError as exc:
        # include_input=False: the offending values may be personal data.
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        raise DecodeError("invalid_data", fields) from exc


@dataclass(frozen=True)
class Acceptance:
    """Which messages a consumer applies, the same for `crm replay`: a CloudEvent of a type in
    `schemas` (event type -> payload model) with a valid payload (validate), read from its type's
    own topic (`home_topics`: each domain's broker ACL then holds for its types; a type not in it
    is taken from any topic), passing every check (signatures...). Anything else is a dead letter."""

    schemas: Mapping[str, type[BaseModel]]
    checks: Sequence[Check] = ()
    home_topics: Mapping[str, str] = field(default_factory=dict)

    def accept(self, r: Message) -> Envelope | DeadLetter:
        try:
            env = from_kafka(r.key, r.value, r.headers)
            validate(env, self.schemas)
        except DecodeError as exc:
            return DeadLetter(r, exc.reason, str(exc))
        try:
            home = self.home_topics.get(env.type, r.topic)
            if home != r.topic:
                raise DecodeError("wrong_topic", f"{env.type} belongs on {home}, not {r.topic}")
            for check in self.checks:
                check(env)
        except DecodeError as exc:
            return DeadLetter(r, exc.reason, str(exc), env.id, env.type)
        return env
