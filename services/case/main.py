"""case: wiring. Cases (tickets) with owner, status, priority, SLA clocks and follow-ups."""

from pathlib import Path

from eventkit.eventstore import EventStore
from servicekit.app import ServiceSpec, create_app, serve
from servicekit.keyring import remote_keyring
from servicekit.runtime import Runtime

from case import agent_handlers, timers
from case.agent_api import router as agent_router
from case.api import router
from case.context import CaseContext
from case.field_api import router as field_router
from case.policies import CaseRulesPolicy
from case.settings import CaseSettings

settings = CaseSettings.for_service("case")
poll_interval_s = settings.case_timer_poll_interval_ms / 1000
keyring = remote_keyring(settings)
context = CaseContext(
    source=settings.source,
    events=EventStore("case", max_event_bytes=settings.event_max_bytes),
    policy=settings.policy(),
    calendar=settings.calendar(),
    rules=settings.rules(),
    keys=keyring,
)


async def sla_timers(rt: Runtime[CaseSettings, CaseContext]) -> None:
    """The durable SLA timer loop (restarted by the runtime if it fails)."""
    await timers.run(rt.context, rt.db, poll_interval_s)


async def auto_assignment(rt: Runtime[CaseSettings, CaseContext]) -> None:
    """The automatic assignment rounds (restarted by the runtime if they fail)."""
    await agent_handlers.run(rt.context, rt.db, poll_interval_s)


app = create_app(
    ServiceSpec(
        name="case",
        title="crm case",
        description="Cases (tickets): lifecycle, owners, priorities, SLA clocks in business hours, follow-ups.",
        subscribers=[CaseRulesPolicy(context)],
        routers=[router, agent_router, field_router],
        migrations=[Path(__file__).parent / "migrations"],
        background=[sla_timers, auto_assignment],
        keyring=keyring,
    ),
    settings,
    context,
)

if __name__ == "__main__":
    serve(app)
