"""What notification's use cases need besides the database: configuration, the clock, randomness."""

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from eventkit.eventstore import EventStore
from servicekit.keyring import KeyRing

from notification import domain


@dataclass(frozen=True)
class NotificationContext:
    """Configuration, the clock and randomness: everything besides the database."""

    source: str
    events: EventStore
    book: domain.RuleBook
    keyring: KeyRing  # the customers' data keys (the runtime's ring: rt.keyring)
    directory: domain.StaffDirectory = field(default_factory=domain.StaffDirectory)
    customer_cap: domain.Cap = field(default_factory=lambda: domain.Cap(5, timedelta(days=1)))
    staff_cap: domain.Cap = field(default_factory=lambda: domain.Cap(60, timedelta(hours=1)))
    digest: domain.DigestPolicy = field(default_factory=domain.DigestPolicy)
    retry: domain.RetryPolicy = field(default_factory=domain.RetryPolicy)
    profile_wait: timedelta = timedelta(seconds=30)
    send_lease: timedelta = timedelta(seconds=60)
    clock: domain.Clock = domain.system_clock
    rand: Callable[[], float] = random.random
    service: str = "notification"

    def rule(self, name: str) -> domain.Rule:
        return next(r for r in (*self.book.rules, *domain.CAMPAIGN_RULES) if r.name == name)
