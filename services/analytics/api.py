"""analytics' HTTP routes: KPIs over time windows, and one customer's insights."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from servicekit.auth import require
from servicekit.http import ApiError, survivor_redirect
from servicekit.inputs import Rfc3339

from analytics import domain, report_store, store
from analytics.deps import AnalyticsRuntime
from contracts.case import CaseType, Priority
from contracts.events import Channel

router = APIRouter()
MAX_RANGE = {"hour": timedelta(days=31), "day": timedelta(days=366)}
# team | owner | type | tag | field.<name> (contracts.fields.FIELD_NAME_PATTERN)
GROUP_BY_PATTERN = r"^(team|owner|type|tag|field\.[a-z][a-z0-9_]{0,62})$"
GroupByParam = Annotated[
    str | None,
    Query(
        pattern=GROUP_BY_PATTERN,
        description="team, owner, type, tag or field.<name>: adds `groups`, one row per value (null: none)",
    ),
]
MAX_GROUPS = 1000


class KpiFilters(BaseModel):
    channel: Channel | None
    region: str | None
    case_type: CaseType | None
    priority: Priority | None
    team: str | None


class InteractionKpis(BaseModel):
    volume: int
    inbound: int
    complaints: int


class Durations(BaseModel):
    mean: float | None = Field(description="seconds; null without cases")
    p90: float | None


class CaseKpis(BaseModel):
    opened: int
    first_response_seconds: Durations
    resolved: int
    resolution_seconds: Durations
    handle_seconds: Durations = Field(description="From the first assignment to resolution")
    closed_same_day: int
    first_contact_resolution_pct: float | None
    sla_compliance_pct: float | None


class CsatKpis(BaseModel):
    responses: int
    mean: float | None
    satisfied_pct: float | None


class NpsKpis(BaseModel):
    responses: int
    score: float | None


class NotificationKpis(BaseModel):
    scheduled: int
    sent: int
    delivered: int
    failed: int
    suppressed: int
    delivery_rate_pct: float | None
    suppression_rate_pct: float | None


class KpiTotals(BaseModel):
    """store.kpis: one of these for the whole range and one per hour or day."""

    interactions: InteractionKpis
    cases: CaseKpis
    csat: CsatKpis
    nps: NpsKpis
    notifications: NotificationKpis


class KpiBucket(KpiTotals):
    start: str = Field(description="RFC 3339, the start of the hour or day")


class KpiGroup(BaseModel):
    """The case KPIs and CSAT of one value of the group_by dimension (docs/reports.md)."""

    group: str | None = Field(description="The team, owner, type, tag or field value; null: none")
    cases: CaseKpis
    cases_handled: int = Field(description="Cases resolved in the range; with group_by=owner, per agent")
    csat: CsatKpis


class KpisOut(BaseModel):
    from_: str = Field(alias="from")
    to: str
    window: Literal["hour", "day"]
    filters: KpiFilters
    totals: KpiTotals
    series: list[KpiBucket] = Field(description="Only hours or days with something in them, oldest first")
    group_by: str | None = Field(default=None, description="Only with group_by")
    groups: list[KpiGroup] | None = Field(default=None, description="Only with group_by: by value, null last")
    sums_to_totals: bool | None = Field(
        default=None,
        description="Only with group_by: whether the groups' counts add up to the totals' (false for tag)",
    )


class RfmOut(BaseModel):
    recency_days: int | None = Field(description="Days since the last interaction; null: never")
    frequency: int
    monetary: float


class RiskOut(BaseModel):
    score: int
    band: str | None
    reasons: list[Any]


class InsightsOut(BaseModel):
    customer_id: str
    as_of: str
    rfm: RfmOut
    risk: RiskOut
    segment: str | None
    region: str | None
    vip: bool
    open_cases: int
    complaints: int
    last_csat: int | None


@router.get(
    "/v1/kpis",
    operation_id="getKpis",
    tags=["analytics"],
    dependencies=[require("ops")],
    summary="Customer-service KPIs over [from, to), totals and one row per hour or day",
    responses={
        200: {"model": KpisOut},
        422: {"description": "validation_failed (range, parameters), personal_field, too_many_groups"},
    },
)
async def get_kpis(
    request: Request,
    rt: AnalyticsRuntime,
    from_: Annotated[Rfc3339, Query(alias="from", description="inclusive, RFC 3339")],
    to: Annotated[Rfc3339, Query(description="exclusive, RFC 3339")],
    window: Literal["hour", "day"] = "day",
    channel: Channel | None = None,
    region: Annotated[str | None, Query(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")] = None,
    case_type: CaseType | None = None,
    priority: Priority | None = None,
    team: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="case KPIs and CSAT of this team's cases only"),
    ] = None,
    group_by: GroupByParam = None,
) -> Any:
    check_single(request, "group_by")
    check_range(from_, to, MAX_RANGE[window], f"with window={window}")
    q = store.KpiQuery(from_, to, window, channel, region, case_type, priority, team)
    async with rt.db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot: the groups add up to the totals even while the KPI stream folds events.
        result = await store.kpis(conn, q)
        if group_by is not None:
            result |= await grouped(conn, q, group_by)
    filters = {"channel": channel, "region": region, "case_type": case_type, "priority": priority, "team": team}
    return {"from": from_.isoformat(), "to": to.isoformat(), "window": window, "filters": filters, **result}


def check_single(request: Request, name: str) -> None:
    """422 for a parameter given twice: one dimension per answer, never a silent choice of one."""
    if len(request.query_params.getlist(name)) > 1:
        raise ApiError(
            422,
            "validation_failed",
            f"{name} given more than once",
            errors=[{"field": f"query.{name}", "reason": "given more than once"}],
        )


def check_range(from_: datetime, to: datetime, limit: timedelta, what: str) -> None:
    """422 unless from < to and the range is at most `limit` long."""
    if to <= from_:
        raise ApiError(
            422,
            "validation_failed",
            "to must be after from",
            errors=[{"field": "query.to", "reason": "not after from"}],
        )
    if to - from_ > limit:
        raise ApiError(
            422,
            "validation_failed",
            f"at most {limit.days} days per request {what}",
            errors=[{"field": "query.to", "reason": "range too long"}],
        )


async def grouped(conn: Any, q: store.KpiQuery, group_by: str) -> dict[str, Any]:
    """`group_by`, `groups` and `sums_to_totals` of a KPI answer (the pattern already checked)."""
    g = report_store.GroupBy.parse(group_by)
    if g.field is not None and await report_store.personal_field(conn, g.field):
        raise ApiError(
            422,
            "personal_field",
            f"field {g.field} is personal: personal fields are never reported",
            errors=[{"field": "query.group_by", "reason": "personal field"}],
        )
    groups = await report_store.grouped_kpis(conn, q, g)
    if len(groups) > MAX_GROUPS:
        raise ApiError(
            422,
            "too_many_groups",
            f"more than {MAX_GROUPS} groups: narrow the range or filter",
            errors=[{"field": "query.group_by", "reason": "too many groups"}],
        )
    return {"group_by": group_by, "groups": groups, "sums_to_totals": g.sums_to_totals}


@router.get(
    "/v1/customers/{customer_id}/insights",
    operation_id="getCustomerInsights",
    tags=["analytics"],
    summary="RFM, churn risk with reasons, segment",
    dependencies=[require("agent", "ops")],
    responses={
        200: {"model": InsightsOut},
        308: {"description": "a merged customer: the survivor's insights"},
        404: {"description": "customer_not_found: analytics knows nothing of this customer (yet)"},
    },
)
async def get_insights(request: Request, rt: AnalyticsRuntime, customer_id: str) -> Response:
    async with rt.db.acquire() as conn:
        survivor = await store.survivor_of(conn, customer_id)
        if survivor is not None:
            return survivor_redirect(request, customer_id, survivor)
        row = await store.insights(conn, customer_id)
    if row is None:
        raise ApiError(404, "customer_not_found", f"analytics knows no customer {customer_id}")
    profile = domain.Profile(
        first_seen=row["first_seen"],
        last_interaction_at=row["last_interaction_at"],
        interactions=row["interactions"],
        purchase_value=float(row["purchase_value"]),
    )
    rfm = domain.rfm(profile, datetime.now(UTC))
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "as_of": row["as_of"].isoformat(),
        "rfm": {"recency_days": rfm.recency_days, "frequency": rfm.frequency, "monetary": rfm.monetary},
        "risk": {"score": row["risk_score"], "band": row["risk_band"], "reasons": row["risk_reasons"]},
        "segment": row["segment"],
        "region": row["region"],
        "vip": row["vip"],
        "open_cases": row["open_cases"],
        "complaints": row["complaints"],
        "last_csat": row["last_csat"],
    }
    return JSONResponse(body)
