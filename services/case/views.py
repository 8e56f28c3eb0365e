"""The case as agents see it, built from its state (the API adds history and SLA)."""

from typing import Any

from case.domain import TRANSITIONS, CaseState
from contracts.fields import personal_value


def to_view(state: CaseState) -> dict[str, Any]:
    """The case as agents see it (without history and SLA, which the API adds)."""
    return {
        "case_id": state.case_id,
        "customer_id": state.customer_id,
        "version": state.version,
        "type": state.type,
        "priority": state.priority,
        "status": state.status,
        "allowed_transitions": list(TRANSITIONS[state.status]),
        "team": state.team,
        "queue": state.queue,
        "owner": state.owner,
        "title": state.title,
        "opened_at": state.opened_at,
        "opened_by": state.opened_by,
        "updated_at": state.updated_at,
        "first_response_at": state.first_response_at,
        "resolved_at": state.resolved_at,
        "closed_at": state.closed_at,
        "pending_spans": [{"from": s, "to": e} for s, e in state.pending_spans()],
        "handovers": state.handovers,
        "notes": state.notes,
        "interactions": state.interactions,
        "escalated": state.escalated,
        "breached": state.breached,
        # Personal values as the state holds them: the value once unsealed, "[sealed]" if the
        # events were not opened, "[erased]" after the customer's erasure.
        "fields": {**state.fields, **{name: personal_value(text) for name, text in state.personal.items()}},
        "tags": state.tags,
        "survey": {
            "requested_at": state.survey_requested_at,
            "due_at": state.survey_due_at,
            "score": state.survey_score,
        },
    }
