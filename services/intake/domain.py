"""Intake's rules: pure functions, no I/O.

An accepted interaction becomes events: `crm.customer.created.v1` first when the customer was
not known, then `crm.interaction.recorded.v1`.
"""

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contracts.events import CustomerCreated, Identifier, InteractionRecorded

CUSTOMER_CREATED = "crm.customer.created.v1"
INTERACTION_RECORDED = "crm.interaction.recorded.v1"
MAX_CLOCK_SKEW = timedelta(minutes=5)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidInput(ValueError):
    """A command that breaks a rule; `field` and `reason` go back to the caller as a 422."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def normalise_email(raw: str) -> str:
    email = raw.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise InvalidInput("customer.email", "not an email address")
    return email


@dataclass(frozen=True)
class RecordInteraction:
    channel: str
    direction: str
    kind: str
    occurred_at: datetime
    customer_id: str | None = None
    email: str | None = None
    content: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def check_occurred_at(occurred_at: datetime, now: datetime) -> None:
    if occurred_at - now > MAX_CLOCK_SKEW:
        raise InvalidInput("occurred_at", "more than 5 minutes in the future")


def new_customer_id() -> str:
    return str(uuid.uuid4())


def customer_created(customer_id: str, email: str) -> dict[str, Any]:
    data = CustomerCreated(customer_id=customer_id, identifiers=[Identifier(kind="email", value=email)])
    return data.model_dump(mode="json")


def interaction_recorded(customer_id: str, cmd: RecordInteraction) -> dict[str, Any]:
    data = InteractionRecorded(
        customer_id=customer_id,
        channel=cmd.channel,  # type: ignore[arg-type]  # validated at the edge
        direction=cmd.direction,  # type: ignore[arg-type]
        kind=cmd.kind,  # type: ignore[arg-type]
        occurred_at=cmd.occurred_at,
        content=cmd.content,
        metadata=cmd.metadata,
    )
    return data.model_dump(mode="json")
