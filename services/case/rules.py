"""Which interactions open or join a case, and what they open: pure rules, no I/O.

The policy that applies them to intake's events is policies.CaseRulesPolicy.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from contracts import case as c

VIP_MINIMUM_PRIORITY = "high"
_CASE_NAMESPACE = uuid.UUID("5b0d7a0e-3c41-4b8e-9a57-0c2f9d3c1a11")


@dataclass(frozen=True)
class OpenRule:
    type: str
    priority: str = "normal"
    team: str = "support"


@dataclass(frozen=True)
class CaseRules:
    """Which interactions open a case (by kind), and the case they open."""

    open_on: Mapping[str, OpenRule] = field(
        default_factory=lambda: {"complaint": OpenRule("complaint"), "request": OpenRule("request")}
    )
    directions: frozenset[str] = frozenset({"inbound"})
    survey_kind: str = "survey_response"
    followup_delay: timedelta = timedelta(hours=24)
    escalation_queues: Mapping[str, str] = field(default_factory=dict)  # team -> queue
    # A customer's answer this soon after the resolution reopens the case; later, the rules decide.
    reopen_window: timedelta = timedelta(days=7)
    # A resolved case nobody answered closes after this long; None: it stays resolved.
    auto_close_after: timedelta | None = timedelta(days=7)

    def escalation_queue(self, team: str) -> str:
        return self.escalation_queues.get(team, f"{team}-escalations")


def opening_rule(rules: CaseRules, kind: str, direction: str, metadata: Mapping[str, Any]) -> OpenRule | None:
    """The case an interaction of this kind opens when the customer has no open case of that type
    (else it joins that one); None if the kind opens no case. metadata.case_type may name a more
    precise type (a request about a repair opens a repair case)."""
    rule = rules.open_on.get(kind)
    if rule is None or direction not in rules.directions:
        return None
    wanted = metadata.get("case_type")
    if isinstance(wanted, str) and wanted in c.CASE_TYPES:
        rule = replace(rule, type=wanted)
    return rule


def case_id_for(interaction_event_id: str) -> str:
    """The same interaction always opens the same case id, so a replay cannot open a second."""
    return str(uuid.uuid5(_CASE_NAMESPACE, interaction_event_id))


def survey_score(metadata: Mapping[str, Any], content: str | None) -> int | None:
    """The 0..10 score of a survey answer: metadata.score, else content that is just a number."""
    raw: Any = metadata.get("score")
    if raw is None and content is not None:
        raw = content.strip()
    if isinstance(raw, bool):
        return None
    try:
        score = int(raw)
    except (TypeError, ValueError):
        return None
    return score if 0 <= score <= 10 else None


def effective_priority(priority: str, vip: bool) -> str:
    """VIP customers get at least high."""
    if vip and c.PRIORITIES.index(priority) < c.PRIORITIES.index(VIP_MINIMUM_PRIORITY):
        return VIP_MINIMUM_PRIORITY
    return priority
