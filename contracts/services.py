"""The services: each one's name, the topic it produces and its port in development.

Everything that lists the services (development ports, `make run`, the generated API pages,
the event catalogue's producers) reads this tuple, so a new service is added here once.
"""

from dataclasses import dataclass

from contracts import topics


@dataclass(frozen=True)
class Service:
    name: str
    topic: str  # the one topic it produces
    port: int  # its HTTP port under `make run` (CRM_<NAME>_PORT moves it)


SERVICES: tuple[Service, ...] = (
    Service("intake", topics.INTAKE, 8001),
    Service("case", topics.CASE, 8002),
    Service("notification", topics.NOTIFICATION, 8003),
    Service("analytics", topics.ANALYTICS, 8004),
)
SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
