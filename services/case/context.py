"""What case's use cases need besides the database: configuration, data keys and the clock."""

from dataclasses import dataclass

from eventkit.eventstore import EventStore
from servicekit.keyring import KeyRing

from case import domain, sla
from case.calendar import BusinessCalendar
from case.rules import CaseRules


@dataclass(frozen=True)
class CaseContext:
    """Everything the use cases need besides the database: configuration and the clock."""

    source: str
    events: EventStore
    policy: sla.SlaPolicy
    calendar: BusinessCalendar
    rules: CaseRules
    keys: KeyRing  # data keys, to seal what agents write (titles, reasons, notes)
    clock: domain.Clock = domain.system_clock
