"""The KPI projection: folds every topic into analytics' tables, a batch at a time.

Interactions are the bulk, so their counters and the customers' profiles are accumulated in
memory per batch and written with one statement each; case, survey and notification events
are rarer and written as they come. A change of a customer's risk band or segment is appended
to analytics' own event store in the same transaction, so it reaches every timeline once.
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, EventStore
from eventkit.telemetry import current_traceparent
from servicekit.timeline import NOT_ON_TIMELINE, NOT_ON_TIMELINE_SUBJECTS

from analytics import domain, report_store, store, unmerge
from contracts import analytics as contract
from contracts import case as case_contract
from contracts import fields as fields_contract
from contracts.events import CUSTOMER_MERGED, CUSTOMER_UNMERGED, INTERACTION_RECORDED, PREFERENCES_CHANGED
from contracts.topics import ANALYTICS

UNKNOWN = "unknown"
RECENT = timedelta(days=90)
NOTIFICATION_PREFIX = "crm.notification."


@dataclass
class Customer:
    profile: domain.Profile
    region: str | None
    complaint_times: list[datetime] = field(default_factory=list)
    risk_band: str | None = None
    segment: str | None = None
    risk_score: int = 0
    risk_reasons: list[dict[str, Any]] = field(default_factory=list)
    as_of: datetime | None = None
    dirty: bool = False


class KpiProjection:
    def __init__(self, store: EventStore, source: str) -> None:
        self._store = store
        self._source = source

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        # Case field definitions (about a field, not a customer): the report's columns.
        for e in events:
            if e.type == fields_contract.CASE_FIELD_DEFINED:
                await report_store.define_case_field(conn, e.data["definition"], e.data["version"])
        # Not our own output, and not events about API keys or agents (no customer in them).
        # Nor events about a campaign (subject campaign:<id>): campaign_projection folds those;
        # nor field definitions (subject field:<record>:<name>), done above.
        events = [
            e
            for e in events
            if not e.type.startswith(("crm.analytics.", *NOT_ON_TIMELINE))
            and not e.subject.startswith(NOT_ON_TIMELINE_SUBJECTS)
        ]
        if not events:
            return
        rows = await store.customers_of(conn, {e.subject for e in events})
        aliases = {r["subject"]: r["survivor_id"] for r in rows if r["survivor_id"] is not None}
        customers = _customers({r["customer_id"]: r for r in rows if r["customer_id"] is not None}.values())
        counts: Counter[tuple[datetime, str, str, str, str]] = Counter()
        channels: dict[str, str] = {}
        nps: list[tuple[str, str, int, datetime, str, str]] = []
        notifications: list[tuple[str, str, datetime, str, str | None, str]] = []
        for e in events:
            cid = aliases.get(e.subject, e.subject)
            if e.type == CUSTOMER_MERGED:
                await self._merge(conn, customers, aliases, e)
                continue
            if e.type == CUSTOMER_UNMERGED:
                await self._unmerge(conn, customers, aliases, e)
                continue
            customer = customers.get(cid)
            if customer is None:
                customer = customers[cid] = Customer(domain.Profile(first_seen=e.time), None, dirty=True)
            # Insights are as of the latest event about the customer, of any kind: time passing is
            # what makes a customer inactive. A late event from a lagging topic does not move them
            # back, so the final answer does not depend on how the topics interleave or are batched.
            if customer.as_of is None or e.time > customer.as_of:
                customer.as_of = e.time
                customer.dirty = True
            if e.type == PREFERENCES_CHANGED:
                prefs = e.data["preferences"]
                customer.region = prefs.get("region")
                if customer.region:
                    await store.complete_region(conn, cid, customer.region)
                customer.profile = replace(customer.profile, vip=bool(prefs.get("vip")))
                customer.dirty = True
            elif e.type == INTERACTION_RECORDED:
                response = self._interaction(customer, e, counts, channels)
                if response is not None:
                    nps.append(response)
            elif e.type.startswith("crm.case."):
                await self._case(conn, customer, e, channels)
            elif e.type.startswith(NOTIFICATION_PREFIX):
                status = e.type.removeprefix(NOTIFICATION_PREFIX).split(".")[0]
                if status == "failed" and not e.data.get("final", True):
                    status = "retried"  # a try failed, another is scheduled: not a failed message
                channel = str(e.data.get("channel") or UNKNOWN)
                notifications.append((e.id, cid, e.time, channel, customer.region, status))
        await store.add_interactions(conn, counts, channels)
        if notifications:
            # A region that arrived later in this batch completes the rows before it, as
            # store.complete_region does for the rows of earlier batches.
            await store.add_notifications(
                conn,
                [
                    (i, c, t, ch, region or _region_of(customers.get(c)), st)
                    for i, c, t, ch, region, st in notifications
                ],
            )
        if nps:
            await store.add_nps(conn, nps)
        await self._write_customers(conn, customers)

    @staticmethod
    def _interaction(
        customer: Customer, e: Envelope, counts: Counter[tuple[datetime, str, str, str, str]], channels: dict[str, str]
    ) -> tuple[str, str, int, datetime, str, str] | None:
        """Fold one interaction; return it as an NPS answer when it is one."""
        d = e.data
        occurred = datetime.fromisoformat(d["occurred_at"])
        counts[(_hour(occurred), d["channel"], customer.region or UNKNOWN, d["kind"], d["direction"])] += 1
        channels[e.id] = d["channel"]
        p = customer.profile
        last = p.last_interaction_at if p.last_interaction_at and p.last_interaction_at > occurred else occurred
        purchases, value = p.purchases, p.purchase_value
        if d["kind"] == "purchase":
            purchases += 1
            amount = d.get("metadata", {}).get("amount")
            value += float(amount) if isinstance(amount, int | float) else 0.0
        if d["kind"] == "complaint":
            customer.complaint_times.append(occurred)
        recent = sum(1 for t in customer.complaint_times if last - t <= RECENT)
        customer.profile = replace(
            p,
            last_interaction_at=last,
            interactions=p.interactions + 1,
            purchases=purchases,
            purchase_value=value,
            complaints=len(customer.complaint_times),
            recent_complaints=recent,
        )
        customer.dirty = True
        survey = d.get("metadata", {})
        score = survey.get("score")
        if (
            d["kind"] == "survey_response"
            and survey.get("survey") == "nps"
            and isinstance(score, int)
            and 0 <= score <= 10
        ):
            return (e.id, d["customer_id"], score, occurred, d["channel"], customer.region or UNKNOWN)
        return None

    async def _case(self, conn: asyncpg.Connection, customer: Customer, e: Envelope, channels: dict[str, str]) -> None:
        d = e.data
        case_id = d["case_id"]
        if e.type == case_contract.CASE_OPENED:
            opened_by = d.get("opened_by")
            channel: str | None
            if opened_by is None:
                channel = "agent"
            else:  # the interaction may not have arrived yet (another topic): completed when it does
                channel = channels.get(opened_by) or await store.interaction_channel(conn, opened_by)
            opened = store.OpenedCase(
                case_id, d["customer_id"], d["type"], d["priority"], channel or UNKNOWN, customer.region or UNKNOWN,
                d["status"], e.time, opened_by, d["team"],
            )  # fmt: skip
            await store.open_case(conn, opened)
            self._open_cases(customer, +1)
        elif e.type == case_contract.CASE_STATUS_CHANGED:
            to, frm = d["to_status"], d["from_status"]
            await store.change_case_status(conn, case_id, to, frm, e.time)
            if to in ("resolved", "closed") and frm not in ("resolved", "closed"):
                self._open_cases(customer, -1)
            elif frm in ("resolved", "closed") and to not in ("resolved", "closed"):
                self._open_cases(customer, +1)
        elif e.type == case_contract.CASE_ASSIGNED:
            await store.assign_case(conn, case_id, d["team"], d["owner"], e.time)
        elif e.type == case_contract.CASE_ESCALATED:
            await store.escalate_case(conn, case_id, d["team"])
        elif e.type == case_contract.CASE_UNASSIGNED:
            await store.unassign_case(conn, case_id)
        elif e.type == fields_contract.CASE_FIELDS_SET:
            # `values` only: personal fields are sealed and never reported.
            await report_store.set_case_fields(conn, case_id, d.get("values") or {})
        elif e.type == fields_contract.CASE_TAGS_CHANGED:
            await report_store.set_case_tags(conn, case_id, d["tags"])
        elif e.type == case_contract.CASE_REPLY_SENT:  # an agent's first reply is a first response
            await store.case_responded(conn, case_id, e.time)
        elif e.type == case_contract.CASE_PRIORITY_CHANGED:
            await store.change_case_priority(conn, case_id, d["to_priority"])
        elif e.type == case_contract.CASE_SLA_BREACHED:
            await store.mark_case_breached(conn, case_id, d["target"])
            customer.profile = replace(customer.profile, sla_breaches=customer.profile.sla_breaches + 1)
            customer.dirty = True
        elif e.type == case_contract.CASE_INTERACTION_LINKED:
            if d.get("direction") == "inbound":
                await store.add_inbound_link(conn, case_id)
            elif d.get("direction") == "outbound":  # the customer got an answer: a first response
                await store.case_responded(conn, case_id, e.time)
        elif e.type == case_contract.CASE_SURVEY_RECORDED:
            row = await store.case_dimensions(conn, case_id)
            await store.add_csat(
                conn,
                e.id,
                case_id,
                d["customer_id"],
                d["score"],
                e.time,
                row["channel"] if row else UNKNOWN,
                row["region"] if row else customer.region or UNKNOWN,
                row["type"] if row else None,
                row["priority"] if row else None,
                row["team"] if row else None,
            )
            customer.profile = replace(customer.profile, last_csat=int(d["score"]))
            customer.dirty = True

    @staticmethod
    def _open_cases(customer: Customer, delta: int) -> None:
        customer.profile = replace(customer.profile, open_cases=max(0, customer.profile.open_cases + delta))
        customer.dirty = True

    async def _merge(
        self, conn: asyncpg.Connection, customers: dict[str, Customer], aliases: dict[str, str], e: Envelope
    ) -> None:
        survivor, merged = e.data["survivor_id"], e.data["merged_id"]
        await store.merge_alias(conn, merged, survivor)
        aliases[merged] = survivor
        gone = customers.pop(merged, None) or (await _load_customers(conn, {merged})).get(merged)
        await store.delete_customer(conn, merged)
        if gone is None:
            return
        keep = customers.get(survivor) or (await _load_customers(conn, {survivor})).get(survivor)
        if keep is None:
            customers[survivor] = replace(gone, dirty=True)
            return
        a, b = keep.profile, gone.profile
        keep.complaint_times = sorted(keep.complaint_times + gone.complaint_times)
        last = max((t for t in (a.last_interaction_at, b.last_interaction_at) if t), default=None)
        keep.profile = replace(
            a,
            first_seen=min(a.first_seen, b.first_seen),
            last_interaction_at=last,
            interactions=a.interactions + b.interactions,
            purchases=a.purchases + b.purchases,
            purchase_value=a.purchase_value + b.purchase_value,
            complaints=len(keep.complaint_times),
            recent_complaints=sum(1 for t in keep.complaint_times if last and last - t <= RECENT),
            sla_breaches=a.sla_breaches + b.sla_breaches,
            open_cases=a.open_cases + b.open_cases,
            vip=a.vip or b.vip,
        )
        keep.region = keep.region or gone.region
        keep.dirty = True
        customers[survivor] = keep

    async def _unmerge(
        self, conn: asyncpg.Connection, customers: dict[str, Customer], aliases: dict[str, str], e: Envelope
    ) -> None:
        """Both customers folded again from their own ids' events (unmerge.py says what is not)."""
        survivor, merged = e.data["survivor_id"], e.data["merged_id"]
        moved = await unmerge.unmerge_aliases(conn, merged)
        aliases.pop(merged, None)
        aliases.update(dict.fromkeys(moved, merged))
        for root in (survivor, merged):
            old = customers.get(root) or (await _load_customers(conn, {root})).get(root)
            folded = await unmerge.refold(conn, await unmerge.members(conn, root))
            if folded is None:
                continue
            profile, region, complaint_times, as_of = folded
            customers[root] = Customer(
                profile, region, complaint_times, old.risk_band if old else None, old.segment if old else None,
                as_of=as_of, dirty=True,
            )  # fmt: skip

    async def _write_customers(self, conn: asyncpg.Connection, customers: dict[str, Customer]) -> None:
        changes: list[Append] = []
        rows = []
        for cid, c in customers.items():
            if not c.dirty:
                continue
            now = c.as_of or c.profile.first_seen
            risk = domain.churn_risk(c.profile, now)
            seg = domain.segment(c.profile, now, risk)
            new: list[Envelope] = []
            # A customer's first classification is news only when it is not the ordinary one.
            if risk.band != c.risk_band and (c.risk_band is not None or risk.band != "low"):
                data = contract.RiskChanged.model_validate(
                    {
                        "customer_id": cid,
                        "band": risk.band,
                        "previous_band": c.risk_band,
                        "score": risk.score,
                        "reasons": list(risk.reasons),
                    }
                )
                new.append(self._event(contract.RISK_CHANGED, cid, data.model_dump(mode="json"), now))
            if seg != c.segment and (c.segment is not None or seg not in ("new", "regular")):
                data2 = contract.SegmentChanged.model_validate(
                    {"customer_id": cid, "segment": seg, "previous_segment": c.segment}
                )
                new.append(self._event(contract.SEGMENT_CHANGED, cid, data2.model_dump(mode="json"), now))
            if new:
                changes.append(Append(f"insights-{cid}", None, new, ANALYTICS))
            p = c.profile
            rows.append(
                (cid, p.first_seen, c.region, p.vip, p.last_interaction_at, p.interactions, p.purchases,
                 p.purchase_value, p.complaints, c.complaint_times, p.sla_breaches, p.open_cases, p.last_csat,
                 risk.score, risk.band, [r.model_dump() for r in risk.reasons], seg, now)
            )  # fmt: skip
        if rows:
            await store.write_customers(conn, rows)
        if changes:
            await self._store.append(conn, changes)

    def _event(self, type_: str, customer_id: str, data: dict[str, Any], at: datetime) -> Envelope:
        # The insight's time is the triggering event's time plus a microsecond: after it in
        # every timeline's canonical order, and the same on a replay.
        return new_event(
            type_, customer_id, data, self._source, current_traceparent(), time=at + timedelta(microseconds=1)
        )


def _region_of(customer: Customer | None) -> str:
    return (customer.region if customer else None) or UNKNOWN


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


async def _load_customers(conn: asyncpg.Connection, ids: set[str]) -> dict[str, Customer]:
    return _customers(await store.customers(conn, ids))


def _customers(rows: Iterable[asyncpg.Record]) -> dict[str, Customer]:
    out = {}
    for r in rows:
        profile = domain.Profile(
            first_seen=r["first_seen"],
            last_interaction_at=r["last_interaction_at"],
            interactions=r["interactions"],
            purchases=r["purchases"],
            purchase_value=float(r["purchase_value"]),
            complaints=r["complaints"],
            recent_complaints=sum(
                1 for t in r["complaint_times"] if r["last_interaction_at"] and r["last_interaction_at"] - t <= RECENT
            ),
            sla_breaches=r["sla_breaches"],
            open_cases=r["open_cases"],
            last_csat=r["last_csat"],
            vip=r["vip"],
        )
        out[r["customer_id"]] = Customer(
            profile, r["region"], list(r["complaint_times"]), r["risk_band"], r["segment"], r["risk_score"],
            r["risk_reasons"], r["as_of"],
        )  # fmt: skip
    return out
