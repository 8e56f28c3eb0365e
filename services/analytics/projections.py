"""The KPI projection: folds every topic into analytics' tables, a batch at a time.

Interactions are the bulk, so their counters and the customers' profiles are accumulated in
memory per batch and written with one statement each; case, survey and notification events
are rarer and written as they come. A change of a customer's risk band or segment is appended
to analytics' own event store in the same transaction, so it reaches every timeline once.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from eventkit.envelope import Envelope, new_event
from eventkit.eventstore import Append, EventStore
from eventkit.telemetry import current_traceparent

from analytics import domain
from contracts import analytics as contract
from contracts import case as case_contract
from contracts.events import CUSTOMER_MERGED, INTERACTION_RECORDED, PREFERENCES_CHANGED
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
        # Not our own output, and not events about API keys (no customer in them).
        events = [e for e in events if not e.type.startswith(("crm.analytics.", "crm.auth."))]
        if not events:
            return
        aliases = await _aliases(conn, {e.subject for e in events})
        customers = await _load_customers(conn, {aliases.get(e.subject, e.subject) for e in events})
        counts: Counter[tuple[datetime, str, str, str, str]] = Counter()
        channels: dict[str, str] = {}
        nps: list[tuple[str, str, int, datetime, str, str]] = []
        notifications: list[tuple[str, str, datetime, str, str | None, str]] = []
        for e in events:
            cid = aliases.get(e.subject, e.subject)
            if e.type == CUSTOMER_MERGED:
                await self._merge(conn, customers, aliases, e)
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
                    await _complete_region(conn, cid, customer.region)
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
        await _write_interactions(conn, counts, channels)
        if notifications:
            await conn.executemany(
                "INSERT INTO kpi_notification_events (event_id, customer_id, at, channel, region, status)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                # A region that arrived later in this batch completes the rows before it, as
                # _complete_region does for the rows of earlier batches.
                [
                    (i, c, t, ch, region or _region_of(customers.get(c)), st)
                    for i, c, t, ch, region, st in notifications
                ],
            )
        if nps:
            await conn.executemany(
                "INSERT INTO kpi_surveys (event_id, customer_id, kind, score, at, channel, region)"
                " VALUES ($1, $2, 'nps', $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                nps,
            )
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
            if opened_by is None:
                channel = "agent"
            else:  # the interaction may not have arrived yet (another topic): completed when it does
                channel = channels.get(opened_by) or await conn.fetchval(
                    "SELECT channel FROM interaction_channels WHERE event_id = $1", opened_by
                )
            await conn.execute(
                "INSERT INTO kpi_cases (case_id, customer_id, type, priority, channel, region, status, opened_at,"
                " opened_by, inbound_links) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                case_id,
                d["customer_id"],
                d["type"],
                d["priority"],
                channel or UNKNOWN,
                customer.region or UNKNOWN,
                d["status"],
                e.time,
                opened_by,
                1 if opened_by else 0,
            )
            self._open_cases(customer, +1)
        elif e.type == case_contract.CASE_STATUS_CHANGED:
            to, frm = d["to_status"], d["from_status"]
            await conn.execute(
                "UPDATE kpi_cases SET status = $2,"
                " first_response_at = CASE WHEN $3 = 'new' AND first_response_at IS NULL THEN $4"
                " ELSE first_response_at END,"
                # A reopened case is not resolved until it is resolved again (then at that time).
                " resolved_at = CASE WHEN $2 = 'resolved' THEN $4 WHEN $3 = 'resolved' AND $2 = 'open' THEN NULL"
                " ELSE resolved_at END,"
                " reopened = reopened OR ($3 = 'resolved' AND $2 = 'open')"
                " WHERE case_id = $1",
                case_id,
                to,
                frm,
                e.time,
            )
            if to in ("resolved", "closed") and frm not in ("resolved", "closed"):
                self._open_cases(customer, -1)
            elif frm in ("resolved", "closed") and to not in ("resolved", "closed"):
                self._open_cases(customer, +1)
        elif e.type == case_contract.CASE_PRIORITY_CHANGED:
            await conn.execute("UPDATE kpi_cases SET priority = $2 WHERE case_id = $1", case_id, d["to_priority"])
        elif e.type == case_contract.CASE_SLA_BREACHED:
            await conn.execute("UPDATE kpi_cases SET breached = true WHERE case_id = $1", case_id)
            customer.profile = replace(customer.profile, sla_breaches=customer.profile.sla_breaches + 1)
            customer.dirty = True
        elif e.type == case_contract.CASE_INTERACTION_LINKED:
            if d.get("direction") == "inbound":
                await conn.execute("UPDATE kpi_cases SET inbound_links = inbound_links + 1 WHERE case_id = $1", case_id)
        elif e.type == case_contract.CASE_SURVEY_RECORDED:
            row = await conn.fetchrow(
                "SELECT type, priority, channel, region FROM kpi_cases WHERE case_id = $1", case_id
            )
            await conn.execute(
                "INSERT INTO kpi_surveys (event_id, customer_id, kind, score, at, channel, region, case_type, priority)"
                " VALUES ($1, $2, 'csat', $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                e.id,
                d["customer_id"],
                d["score"],
                e.time,
                row["channel"] if row else UNKNOWN,
                row["region"] if row else customer.region or UNKNOWN,
                row["type"] if row else None,
                row["priority"] if row else None,
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
        await conn.execute("UPDATE analytics_aliases SET survivor_id = $1 WHERE survivor_id = $2", survivor, merged)
        await conn.execute(
            "INSERT INTO analytics_aliases (merged_id, survivor_id) VALUES ($1, $2)"
            " ON CONFLICT (merged_id) DO UPDATE SET survivor_id = EXCLUDED.survivor_id",
            merged,
            survivor,
        )
        aliases[merged] = survivor
        gone = customers.pop(merged, None) or (await _load_customers(conn, {merged})).get(merged)
        await conn.execute("DELETE FROM analytics_customers WHERE customer_id = $1", merged)
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
            await conn.executemany(
                "INSERT INTO analytics_customers (customer_id, first_seen, region, vip, last_interaction_at,"
                " interactions, purchases, purchase_value, complaints, complaint_times, sla_breaches, open_cases,"
                " last_csat, risk_score, risk_band, risk_reasons, segment, as_of)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
                " ON CONFLICT (customer_id) DO UPDATE SET first_seen = EXCLUDED.first_seen, region = EXCLUDED.region,"
                " vip = EXCLUDED.vip, last_interaction_at = EXCLUDED.last_interaction_at,"
                " interactions = EXCLUDED.interactions, purchases = EXCLUDED.purchases,"
                " purchase_value = EXCLUDED.purchase_value, complaints = EXCLUDED.complaints,"
                " complaint_times = EXCLUDED.complaint_times, sla_breaches = EXCLUDED.sla_breaches,"
                " open_cases = EXCLUDED.open_cases, last_csat = EXCLUDED.last_csat, risk_score = EXCLUDED.risk_score,"
                " risk_band = EXCLUDED.risk_band, risk_reasons = EXCLUDED.risk_reasons, segment = EXCLUDED.segment,"
                " as_of = EXCLUDED.as_of",
                rows,
            )
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


async def _aliases(conn: asyncpg.Connection, ids: set[str]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT merged_id, survivor_id FROM analytics_aliases WHERE merged_id = ANY($1::text[])", list(ids)
    )
    return {r["merged_id"]: r["survivor_id"] for r in rows}


async def _load_customers(conn: asyncpg.Connection, ids: set[str]) -> dict[str, Customer]:
    rows = await conn.fetch("SELECT * FROM analytics_customers WHERE customer_id = ANY($1::text[])", list(ids))
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


async def _write_interactions(
    conn: asyncpg.Connection, counts: Counter[tuple[datetime, str, str, str, str]], channels: dict[str, str]
) -> None:
    if counts:
        keys = list(counts)
        await conn.execute(
            "INSERT INTO kpi_interactions (bucket, channel, region, kind, direction, count)"
            " SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])"
            " ON CONFLICT (bucket, channel, region, kind, direction)"
            " DO UPDATE SET count = kpi_interactions.count + EXCLUDED.count",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            [k[4] for k in keys],
            [counts[k] for k in keys],
        )
    if channels:
        await conn.execute(
            "INSERT INTO interaction_channels (event_id, channel) SELECT * FROM unnest($1::uuid[], $2::text[])"
            " ON CONFLICT DO NOTHING",
            list(channels),
            list(channels.values()),
        )
        await conn.execute(
            "UPDATE kpi_cases c SET channel = x.channel FROM unnest($1::text[], $2::text[]) AS x(id, channel)"
            " WHERE c.opened_by = x.id AND c.channel = 'unknown'",
            list(channels),
            list(channels.values()),
        )


async def _complete_region(conn: asyncpg.Connection, customer_id: str, region: str) -> None:
    """Cases, surveys and notifications that arrived before the customer's region get it now."""
    await conn.execute(
        "UPDATE kpi_cases SET region = $2 WHERE customer_id = $1 AND region = 'unknown'", customer_id, region
    )
    await conn.execute(
        "UPDATE kpi_surveys SET region = $2 WHERE customer_id = $1 AND region = 'unknown'", customer_id, region
    )
    await conn.execute(
        "UPDATE kpi_notification_events SET region = $2 WHERE customer_id = $1 AND region = 'unknown'",
        customer_id,
        region,
    )
