"""The case rules as a policy on intake's events: they issue case commands, they build no read model.

The idempotent consumer calls apply() with events not applied before, inside the transaction
that records them as applied. Cases opened or joined here are appended to case's own event
store in that same transaction, so each interaction has its effect exactly once: a redelivered
interaction finds its id recorded and does nothing.

- crm.interaction.recorded.v1: a survey answer joins the case awaiting one and records the
  score. Any other inbound interaction is the customer's answer: it joins the case it answers
  (domain.reply_target: the case named in metadata.case_id, else the most recently active open
  case, of the kind's type for a rule kind), opening a pending case again and reopening one
  resolved within the reopen window. A rule kind (complaint, request) that answers no case opens
  a new one. An outbound interaction naming its case in metadata.case_id links to it (the
  agent's answer: first response, next reply). One query per batch finds the customers with
  no case an answer could reach: their answers need no lock and no further query.
- crm.customer.preferences_changed.v1: the customer's VIP flag; a new VIP's open cases are
  raised to at least high.
"""

import logging
from collections.abc import Sequence

import asyncpg
from eventkit.envelope import Envelope

from case import domain, handlers, rules, store
from case.context import CaseContext
from contracts.events import INTERACTION_RECORDED, PREFERENCES_CHANGED

log = logging.getLogger(__name__)


class CaseRulesPolicy:
    def __init__(self, ctx: CaseContext) -> None:
        self.ctx = ctx

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        interactions = [e for e in events if e.type == INTERACTION_RECORDED]
        plain = {e.id for e in interactions if self._plain_answer(e)}
        reach = await self._reach(conn, interactions) if plain else {}
        acted: set[str] = set()  # roots whose cases this batch may have changed: no shortcut
        for e in events:
            if e.type == INTERACTION_RECORDED:
                known = reach.get(e.data["customer_id"])
                if known is not None and not known.any_case and known.root not in acted and e.id in plain:
                    continue  # an answer while the customer has no case to answer: nothing to do
                await self._interaction(conn, e)
                if known is not None:
                    acted.add(known.root)
            elif e.type == PREFERENCES_CHANGED:
                await self._preferences(conn, e)

    async def _reach(self, conn: asyncpg.Connection, interactions: Sequence[Envelope]) -> dict[str, store.Reach]:
        """One query, asked when the batch holds inbound answers that open no case: for every
        customer of the batch's interactions, whether they have any case an answer could reach (a
        busy channel's messages mostly find none) and their root, which the batch's own cases are
        counted under."""
        since = min(e.time for e in interactions) - self.ctx.rules.reopen_window
        return await store.reach(conn, [e.data["customer_id"] for e in interactions], since)

    def _plain_answer(self, e: Envelope) -> bool:
        """An inbound interaction that is no survey answer and opens no case: it only joins a case
        the customer has."""
        data = e.data
        if data["direction"] != "inbound" or data["kind"] == self.ctx.rules.survey_kind:
            return False
        return rules.opening_rule(self.ctx.rules, data["kind"], "inbound", data.get("metadata") or {}) is None

    async def _interaction(self, conn: asyncpg.Connection, e: Envelope) -> None:
        data = e.data
        survey = data["kind"] == self.ctx.rules.survey_kind
        metadata = data.get("metadata") or {}
        rule = rules.opening_rule(self.ctx.rules, data["kind"], data["direction"], metadata)
        if not survey and rule is None and data["direction"] != "inbound":
            named = metadata.get("case_id")
            if isinstance(named, str):
                await self._agent_answer(conn, e, named)
            return  # what agents send about no case: no database work at all
        ids = await store.customer_ids(conn, data["customer_id"])
        await store.lock_customer(conn, ids[0])
        if survey:
            await self._survey_answer(conn, e, ids)
            return
        target = await self._answered_case(conn, e, ids, rule) if data["direction"] == "inbound" else None
        if target is not None:
            await self._answer(conn, e, target.case_id)
            return
        if rule is None:
            return  # an answer to no case, of a kind that opens none
        case_id = rules.case_id_for(e.id)
        if await store.case_exists(conn, case_id):
            return  # this interaction opened it already (a replay)
        drafts = domain.open_case(case_id, data["customer_id"], rule, await store.is_vip(conn, ids), e.id)
        await handlers.commit(conn, self.ctx, domain.CaseState(case_id), drafts, e.traceparent)

    async def _link(self, conn: asyncpg.Connection, e: Envelope, case_id: str) -> None:
        await store.lock_case(conn, case_id)
        state, _ = await handlers.load(conn, self.ctx, case_id)
        if e.id in state.interactions:
            return
        data = e.data
        drafts = domain.link_interaction(state, e.id, data["kind"], data["channel"], data["direction"])
        await handlers.commit(conn, self.ctx, state, drafts, e.traceparent)

    async def _answered_case(
        self, conn: asyncpg.Connection, e: Envelope, ids: list[str], rule: rules.OpenRule | None
    ) -> domain.ReplyTarget | None:
        window = self.ctx.rules.reopen_window
        candidates = await store.reply_candidates(conn, ids, e.time - window)
        named = (e.data.get("metadata") or {}).get("case_id")
        named = named if isinstance(named, str) else None
        return domain.reply_target(candidates, e.time, window, rule.type if rule else None, named)

    async def _answer(self, conn: asyncpg.Connection, e: Envelope, case_id: str) -> None:
        await store.lock_case(conn, case_id)
        state, _ = await handlers.load(conn, self.ctx, case_id)
        if e.id in state.interactions or state.status == "closed":
            return  # linked already (a replay), or closed since the candidates were read
        data = e.data
        drafts = domain.customer_replied(
            state, e.id, data["kind"], data["channel"], e.time, self.ctx.clock(), self.ctx.rules
        )
        await handlers.commit(conn, self.ctx, state, drafts, e.traceparent)

    async def _agent_answer(self, conn: asyncpg.Connection, e: Envelope, case_id: str) -> None:
        """An outbound interaction naming its case links to it: it answers the customer (first
        response, next reply). Only the customer's own case that is not closed."""
        ids = await store.customer_ids(conn, e.data["customer_id"])
        if not await store.lock_case(conn, case_id):
            return
        state, _ = await handlers.load(conn, self.ctx, case_id)
        if state.customer_id not in ids or state.status == "closed" or e.id in state.interactions:
            return
        drafts = domain.link_interaction(state, e.id, e.data["kind"], e.data["channel"], "outbound")
        await handlers.commit(conn, self.ctx, state, drafts, e.traceparent)

    async def _survey_answer(self, conn: asyncpg.Connection, e: Envelope, ids: list[str]) -> None:
        case_id = await store.case_awaiting_survey(conn, ids)
        if case_id is None:
            return
        data = e.data
        if rules.survey_score(data.get("metadata") or {}, None) is None:
            # The score may be the answer's text, which is sealed: read it with the customer's key.
            data = (await self.ctx.keys.unseal([data]))[0]
        score = rules.survey_score(data.get("metadata") or {}, data.get("content"))
        if score is None:  # an answer without a score still belongs to the case
            await self._link(conn, e, case_id)
            return
        await store.lock_case(conn, case_id)
        state, _ = await handlers.load(conn, self.ctx, case_id)
        drafts = domain.record_survey(state, e.id, data["channel"], score)
        await handlers.commit(conn, self.ctx, state, drafts, e.traceparent)

    async def _preferences(self, conn: asyncpg.Connection, e: Envelope) -> None:
        customer_id = e.data["customer_id"]
        vip = bool(e.data["preferences"].get("vip"))
        await store.set_vip(conn, customer_id, vip, e.time)
        if not vip:
            return
        ids = await store.customer_ids(conn, customer_id)
        await store.lock_customer(conn, ids[0])
        for case_id in await store.open_cases(conn, ids):
            await store.lock_case(conn, case_id)
            state, _ = await handlers.load(conn, self.ctx, case_id)
            wanted = rules.effective_priority(state.priority, vip=True)
            if wanted != state.priority:
                drafts = domain.set_priority(state, wanted, "the customer is a VIP", vip=True)
                await handlers.commit(conn, self.ctx, state, drafts, e.traceparent)
