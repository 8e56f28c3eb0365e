"""Every API operation the clients offer, as a `Call` built from the method's arguments.

`Client` and `AsyncClient` have one method per function here, of the same name and arguments.
"""

import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from crm_client._core import Call
from crm_client.models import (
    Accepted,
    AgentChange,
    Campaign,
    CampaignList,
    CampaignResults,
    Case,
    CaseChange,
    CaseList,
    Customer,
    CustomerFieldsChange,
    CustomerTagsChange,
    Kpis,
    MergeResult,
    Queue,
    Timeline,
)

TIMELINE_PATH = "/v1/customers/{customer_id}/timeline"


def _jsonable(value: Any) -> Any:
    """datetimes as RFC 3339 text, recursively; the rest as it is (httpx encodes it)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _version(version: int) -> dict[str, str]:
    # The case version the agent decided on: the command is refused (409) if the case moved since.
    return {"If-Match": f'"{int(version)}"'}


# ---- intake ------------------------------------------------------------------------------------


def record_interaction(idempotency_key: str | None = None, **fields: Any) -> Call[Accepted]:
    return Call(
        "recordInteraction",
        "intake",
        "POST",
        "/v1/interactions",
        Accepted.model_validate,
        json=_jsonable(fields),
        # One key per call, the same on each retry: a retry returns the first answer.
        headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
    )


def record_batch(items: Iterable[Mapping[str, Any]], idempotency_key: str | None = None) -> Call[list[Accepted]]:
    return Call(
        "recordInteractionBatch",
        "intake",
        "POST",
        "/v1/interactions:batch",
        lambda body: [Accepted.model_validate(i) for i in body["items"]],
        json={"items": [_jsonable(i) for i in items]},
        headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
    )


def timeline(
    customer_id: str,
    *,
    wait_for: str | None = None,
    timeout_ms: int | None = None,
    limit: int = 50,
    before: str | None = None,
) -> Call[Timeline]:
    waits = wait_for is not None
    return Call(
        "getTimeline",
        "intake",
        "GET",
        TIMELINE_PATH,
        Timeline.model_validate,
        {"customer_id": customer_id},
        _query(limit=limit, before=before, wait_for=wait_for, timeout_ms=timeout_ms),
        follow_308=True,
        # the server holds the answer up to timeout_ms (1 s unless told) waiting for the event
        extra_timeout_s=((1000 if timeout_ms is None else timeout_ms) / 1000) if waits else 0.0,
    )


def customer(customer_id: str) -> Call[Customer]:
    return Call(
        "getCustomer",
        "intake",
        "GET",
        "/v1/customers/{customer_id}",
        Customer.model_validate,
        {"customer_id": customer_id},
        follow_308=True,
    )


def set_customer_fields(customer_id: str, values: Mapping[str, Any]) -> Call[CustomerFieldsChange]:
    # A PUT of the named fields only (None clears one): the same call twice leaves the same state.
    return Call(
        "setCustomerFields",
        "intake",
        "PUT",
        "/v1/customers/{customer_id}/fields",
        CustomerFieldsChange.model_validate,
        {"customer_id": customer_id},
        json={"values": _jsonable(dict(values))},
        follow_308=True,
    )


def change_customer_tags(
    customer_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()
) -> Call[CustomerTagsChange]:
    # Adding a tag it has, or removing one it lacks, changes nothing: safe to retry.
    return Call(
        "changeCustomerTags",
        "intake",
        "POST",
        "/v1/customers/{customer_id}/tags",
        CustomerTagsChange.model_validate,
        {"customer_id": customer_id},
        json={"add": list(add), "remove": list(remove)},
        follow_308=True,
    )


def merge_customers(customer_id: str, merged_id: str) -> Call[MergeResult]:
    return Call(
        "mergeCustomer",
        "intake",
        "POST",
        "/v1/customers/{customer_id}/merge",
        MergeResult.model_validate,
        {"customer_id": customer_id},
        json={"merged_id": merged_id},
        # merging twice is a 409 already_merged: retried only when surely unsent
        retry="unsent",
    )


def unmerge_customer(
    customer_id: str,
    merged_id: str,
    identifiers: Iterable[Mapping[str, Any]] = (),
    *,
    reason: str | None = None,
) -> Call[MergeResult]:
    body = {"merged_id": merged_id, "identifiers": [dict(i) for i in identifiers], **_query(reason=reason)}
    return Call(
        "unmergeCustomer",
        "intake",
        "POST",
        "/v1/customers/{customer_id}/unmerge",
        MergeResult.model_validate,
        {"customer_id": customer_id},
        json=body,
        retry="unsent",  # unmerging twice is a 409 not_merged
    )


# ---- case --------------------------------------------------------------------------------------


def list_cases(
    *,
    status: str | list[str] | None = None,
    priority: str | list[str] | None = None,
    type: str | list[str] | None = None,
    owner: str | None = None,
    team: str | None = None,
    queue: str | None = None,
    customer_id: str | None = None,
    breached: bool | None = None,
    escalated: bool | None = None,
    limit: int = 50,
    before: str | None = None,
    fields: Mapping[str, Any] | None = None,
    tags: Iterable[str] | None = None,
) -> Call[CaseList]:
    """`fields`: field.<name>=<value> filters (non-personal fields); `tags`: cases with all of them."""

    def flag(value: bool | None) -> str | None:
        return None if value is None else str(value).lower()

    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    return Call(
        "listCases",
        "case",
        "GET",
        "/v1/cases",
        CaseList.model_validate,
        params=_query(
            status=status,
            priority=priority,
            type=type,
            owner=owner,
            team=team,
            queue=queue,
            customer_id=customer_id,
            breached=flag(breached),
            escalated=flag(escalated),
            limit=limit,
            before=before,
            tag=list(tags) if tags is not None else None,
        )
        | {f"field.{name}": text(value) for name, value in (fields or {}).items()},
    )


def queue(team: str, *, limit: int | None = None) -> Call[Queue]:
    return Call(
        "getTeamQueue", "case", "GET", "/v1/queues/{team}", Queue.model_validate, {"team": team}, _query(limit=limit)
    )


def case(case_id: str) -> Call[Case]:
    return Call("getCase", "case", "GET", "/v1/cases/{case_id}", Case.model_validate, {"case_id": case_id})


def open_case(
    customer_id: str,
    type: str,
    *,
    priority: str | None = None,
    team: str | None = None,
    title: str | None = None,
    case_id: str | None = None,
) -> Call[CaseChange]:
    body = _query(customer_id=customer_id, type=type, priority=priority, team=team, title=title)
    # A case id chosen here makes a retry safe: opening it again answers with that case.
    body["case_id"] = case_id or str(uuid.uuid4())
    return Call("createCase", "case", "POST", "/v1/cases", CaseChange.model_validate, json=body)


def _command(operation_id: str, case_id: str, action: str, version: int, body: dict[str, Any]) -> Call[CaseChange]:
    return Call(
        operation_id,
        "case",
        "POST",
        "/v1/cases/{case_id}/" + action,
        CaseChange.model_validate,
        {"case_id": case_id},
        json=_query(**body),
        headers=_version(version),
        retry="unsent",
    )


def assign(case_id: str, owner: str, *, version: int, team: str | None = None) -> Call[CaseChange]:
    return _command("assignCase", case_id, "assign", version, {"owner": owner, "team": team})


def change_status(case_id: str, status: str, *, version: int, reason: str | None = None) -> Call[CaseChange]:
    return _command("changeCaseStatus", case_id, "status", version, {"status": status, "reason": reason})


def set_priority(case_id: str, priority: str, *, version: int, reason: str | None = None) -> Call[CaseChange]:
    return _command("setCasePriority", case_id, "priority", version, {"priority": priority, "reason": reason})


def reply(
    case_id: str, body: str, *, version: int, channel: str = "email", author: str | None = None
) -> Call[CaseChange]:
    return _command("replyToCase", case_id, "replies", version, {"channel": channel, "body": body, "author": author})


def add_note(case_id: str, text: str, *, version: int, author: str) -> Call[CaseChange]:
    return _command("addCaseNote", case_id, "notes", version, {"author": author, "text": text})


def link_interaction(case_id: str, interaction_event_id: str, *, version: int) -> Call[CaseChange]:
    return _command(
        "linkCaseInteraction", case_id, "interactions", version, {"interaction_event_id": interaction_event_id}
    )


def set_case_fields(case_id: str, values: Mapping[str, Any], if_match: int) -> Call[CaseChange]:
    """Set typed fields (None clears one) at the case version `if_match`."""
    return _command("setCaseFields", case_id, "fields", if_match, {"values": dict(values)})


def change_case_tags(
    case_id: str, add: Iterable[str] = (), remove: Iterable[str] = (), *, if_match: int | None = None
) -> Call[CaseChange]:
    """Tags commute: the case version is checked only when `if_match` is given."""
    return Call(
        "changeCaseTags",
        "case",
        "POST",
        "/v1/cases/{case_id}/tags",
        CaseChange.model_validate,
        {"case_id": case_id},
        json={"add": list(add), "remove": list(remove)},
        headers=_version(if_match) if if_match is not None else {},
        retry="unsent",
    )


def set_agent_status(agent_id: str, status: str) -> Call[AgentChange]:
    return Call(
        "setAgentStatus",
        "case",
        "PUT",
        "/v1/agents/{agent_id}/status",
        AgentChange.model_validate,
        {"agent_id": agent_id},
        json={"status": status},
    )


# ---- campaigns: notification sends, analytics measures -------------------------------------------


def create_campaign(
    name: str,
    audience: Mapping[str, Any],
    purpose: str,
    templates: Mapping[str, Mapping[str, str]],
    *,
    send_at: datetime | None = None,
    campaign_id: str | None = None,
) -> Call[Campaign]:
    body = _query(name=name, audience=_jsonable(audience), purpose=purpose, templates=_jsonable(templates))
    if send_at is not None:
        body["send_at"] = _jsonable(send_at)
    # A campaign id chosen here makes a retry safe: the same id and body is the same campaign.
    body["campaign_id"] = campaign_id or str(uuid.uuid4())
    return Call("createCampaign", "notification", "POST", "/v1/campaigns", Campaign.model_validate, json=body)


def campaigns(*, limit: int = 50, before: str | None = None) -> Call[CampaignList]:
    return Call(
        "listCampaigns",
        "notification",
        "GET",
        "/v1/campaigns",
        CampaignList.model_validate,
        params=_query(limit=limit, before=before),
    )


def campaign(campaign_id: str) -> Call[Campaign]:
    return Call(
        "getCampaign",
        "notification",
        "GET",
        "/v1/campaigns/{campaign_id}",
        Campaign.model_validate,
        {"campaign_id": campaign_id},
    )


def _campaign_command(operation_id: str, campaign_id: str, action: str) -> Call[Campaign]:
    return Call(
        operation_id,
        "notification",
        "POST",
        "/v1/campaigns/{campaign_id}:" + action,
        Campaign.model_validate,
        {"campaign_id": campaign_id},
        # pausing twice is a 409 (not paused any more, or already): retried only when surely unsent
        retry="unsent",
    )


def pause_campaign(campaign_id: str) -> Call[Campaign]:
    return _campaign_command("pauseCampaign", campaign_id, "pause")


def resume_campaign(campaign_id: str) -> Call[Campaign]:
    return _campaign_command("resumeCampaign", campaign_id, "resume")


def cancel_campaign(campaign_id: str) -> Call[Campaign]:
    return _campaign_command("cancelCampaign", campaign_id, "cancel")


def campaign_results(campaign_id: str) -> Call[CampaignResults]:
    return Call(
        "getCampaignResults",
        "analytics",
        "GET",
        "/v1/campaigns/{campaign_id}/results",
        CampaignResults.model_validate,
        {"campaign_id": campaign_id},
    )


# ---- analytics: KPIs and reports (scope ops) ---------------------------------------------------


def _time(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def kpis(start: datetime | str, end: datetime | str, *, group_by: str | None = None, **filters: str) -> Call[Kpis]:
    """filters: window (hour, day), channel, region, case_type, priority, team."""
    params = _query(**{"from": _time(start), "to": _time(end), "group_by": group_by, **filters})
    return Call("getKpis", "analytics", "GET", "/v1/kpis", Kpis.model_validate, params=params)


def case_report_csv(start: datetime | str, end: datetime | str) -> Call[str]:
    params = {"from": _time(start), "to": _time(end)}
    return Call("getCaseReportCsv", "analytics", "GET", "/v1/reports/cases.csv", str, params=params, text=True)


def kpi_report_csv(start: datetime | str, end: datetime | str, group_by: str, **filters: str) -> Call[str]:
    params = _query(**{"from": _time(start), "to": _time(end), "group_by": group_by, **filters})
    return Call("getKpiReportCsv", "analytics", "GET", "/v1/reports/kpis.csv", str, params=params, text=True)
