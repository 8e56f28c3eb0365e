"""case's own settings, on top of the shared ones. JSON values come straight from the environment:

CASE_SLA_POLICY='{"urgent": {"first_response": 3600, "resolution": 14400}, ...}'   (business seconds)
CASE_BUSINESS_CALENDAR='{"time_zone": "Europe/Berlin", "working_days": ["mon","tue","wed","thu","fri"],
                         "hours": ["09:00", "17:00"], "holidays": ["2026-12-25"]}'   or '"24x7"'
CASE_RULES='{"complaint": {"type": "complaint", "priority": "normal", "team": "support"}, ...}'
CASE_SLA_NEXT_REPLY='{"urgent": 900, "high": 3600}'   (business seconds; priorities not named: no target)
"""

from datetime import date, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from servicekit.settings import Settings

from case.calendar import BusinessCalendar
from case.rules import CaseRules, OpenRule
from case.sla import DEFAULT_POLICY, DEFAULT_TARGETS, SlaPolicy, Targets
from contracts.case import CaseType, Priority
from contracts.events import InteractionKind

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM = Annotated[str, Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]


class TargetsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first_response: float = Field(gt=0, description="business seconds")
    resolution: float = Field(gt=0, description="business seconds")


class CalendarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_zone: str = "UTC"
    working_days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = ["mon", "tue", "wed", "thu", "fri"]
    hours: tuple[HHMM, HHMM] = ("09:00", "17:00")
    holidays: list[date] = []


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: CaseType
    priority: Priority = "normal"
    team: str = Field(default="support", min_length=1, max_length=64)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class CaseSettings(Settings):
    case_sla_policy: dict[Priority, TargetsIn] = {
        p: TargetsIn(first_response=t.first_response, resolution=t.resolution) for p, t in DEFAULT_TARGETS.items()
    }
    case_sla_warning_share: float = Field(default=0.8, gt=0, lt=1)
    # Business seconds an agent has to answer a customer's answer, by priority; {}: no target.
    case_sla_next_reply: dict[Priority, Annotated[float, Field(gt=0)]] = {}
    case_business_calendar: CalendarIn | Literal["24x7"] = CalendarIn()
    case_rules: dict[InteractionKind, RuleIn] = {
        "complaint": RuleIn(type="complaint"),
        "request": RuleIn(type="request"),
    }
    case_escalation_queues: dict[str, str] = {}  # team -> queue; default "<team>-escalations"
    case_followup_delay_s: float = Field(default=86_400, ge=0)
    # A customer's answer this soon after the resolution reopens the case (0: never reopens).
    case_reopen_window_s: float = Field(default=604_800, ge=0)
    # A resolved case without an answer closes after this long (0: never closes by itself).
    case_auto_close_after_s: float = Field(default=604_800, ge=0)
    case_timer_poll_interval_ms: int = Field(default=1000, ge=10)

    def policy(self) -> SlaPolicy:
        targets = dict(DEFAULT_POLICY.targets)  # priorities not named keep the defaults
        targets.update({p: Targets(t.first_response, t.resolution) for p, t in self.case_sla_policy.items()})
        next_reply: dict[str, float] = {p: s for p, s in self.case_sla_next_reply.items()}
        return SlaPolicy(targets, self.case_sla_warning_share, next_reply)

    def calendar(self) -> BusinessCalendar:
        cal = self.case_business_calendar
        if cal == "24x7":
            return BusinessCalendar.always_open()
        assert isinstance(cal, CalendarIn)
        return BusinessCalendar(
            time_zone=cal.time_zone,
            working_days=frozenset(_DAYS.index(d) for d in cal.working_days),
            start_minute=_minutes(cal.hours[0]),
            end_minute=_minutes(cal.hours[1]),
            holidays=frozenset(cal.holidays),
        )

    def rules(self) -> CaseRules:
        return CaseRules(
            open_on={kind: OpenRule(r.type, r.priority, r.team) for kind, r in self.case_rules.items()},
            followup_delay=timedelta(seconds=self.case_followup_delay_s),
            escalation_queues=dict(self.case_escalation_queues),
            reopen_window=timedelta(seconds=self.case_reopen_window_s),
            auto_close_after=timedelta(seconds=self.case_auto_close_after_s) if self.case_auto_close_after_s else None,
        )
