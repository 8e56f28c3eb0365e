"""An unmerge in the KPI fold (docs/merge-and-unmerge.md): the merged id and the ids merged into
it answer for themselves again, and both customers' profiles are folded again from the rows of
their own ids in analytics' timeline.

A merge adds the two profiles together, which cannot be taken apart; each one's events can be
folded again. What is not folded again: the KPI counters (they never depended on who the
customer was, beyond the region an event was counted in) and the campaign tables a merge moved
to the survivor (campaign_store.merge).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg
from eventkit.envelope import Envelope
from servicekit.timeline import NOT_ON_TIMELINE, record_unmerge

from analytics import domain
from contracts import case as case_contract
from contracts.events import CUSTOMER_MERGED, CUSTOMER_UNMERGED, INTERACTION_RECORDED, PREFERENCES_CHANGED

_RESOLVED = ("resolved", "closed")
_TP = "00-" + "0" * 31 + "1-" + "0" * 15 + "1-00"  # rows of the timeline keep no traceparent


async def unmerge_aliases(conn: asyncpg.Connection, merged_id: str) -> list[str]:
    """merged_id leaves its survivor; the ids merged into it are its aliases again (returned)."""
    return await record_unmerge(conn, merged_id, table="analytics_aliases")


async def members(conn: asyncpg.Connection, customer_id: str) -> list[str]:
    rows = await conn.fetch("SELECT merged_id FROM analytics_aliases WHERE survivor_id = $1", customer_id)
    return [customer_id, *(r["merged_id"] for r in rows)]


async def refold(
    conn: asyncpg.Connection, ids: Sequence[str]
) -> tuple[domain.Profile, str | None, list[datetime], datetime] | None:
    """The profile, region, complaint times and as-of time folded from the timeline rows of `ids`
    in canonical order, as KpiProjection folds them; None when there are none."""
    from analytics.projections import Customer, KpiProjection  # the fold's own interaction step

    rows = await conn.fetch(
        "SELECT customer_id, time, event_id, type, source, data FROM timeline WHERE customer_id = ANY($1::text[])"
        " ORDER BY time, event_id",
        list(ids),
    )
    customer: Customer | None = None
    for r in rows:
        type_ = r["type"]
        if type_.startswith(("crm.analytics.", *NOT_ON_TIMELINE)) or type_ in (CUSTOMER_MERGED, CUSTOMER_UNMERGED):
            continue
        e = Envelope(
            id=str(r["event_id"]), type=type_, source=r["source"], subject=r["customer_id"], time=r["time"],
            data=r["data"], traceparent=_TP,
        )  # fmt: skip
        if customer is None:
            customer = Customer(domain.Profile(first_seen=e.time), None)
        if customer.as_of is None or e.time > customer.as_of:
            customer.as_of = e.time
        d = e.data
        p = customer.profile
        if type_ == PREFERENCES_CHANGED:
            customer.region = d["preferences"].get("region")
            customer.profile = replace(p, vip=bool(d["preferences"].get("vip")))
        elif type_ == INTERACTION_RECORDED:
            KpiProjection._interaction(customer, e, Counter(), {})
        elif type_ == case_contract.CASE_OPENED:
            customer.profile = replace(p, open_cases=p.open_cases + 1)
        elif type_ == case_contract.CASE_STATUS_CHANGED:
            to, frm = d["to_status"], d["from_status"]
            if to in _RESOLVED and frm not in _RESOLVED:
                customer.profile = replace(p, open_cases=max(0, p.open_cases - 1))
            elif frm in _RESOLVED and to not in _RESOLVED:
                customer.profile = replace(p, open_cases=p.open_cases + 1)
        elif type_ == case_contract.CASE_SLA_BREACHED:
            customer.profile = replace(p, sla_breaches=p.sla_breaches + 1)
        elif type_ == case_contract.CASE_SURVEY_RECORDED:
            customer.profile = replace(p, last_csat=int(d["score"]))
    if customer is None or customer.as_of is None:
        return None
    return customer.profile, customer.region, customer.complaint_times, customer.as_of
