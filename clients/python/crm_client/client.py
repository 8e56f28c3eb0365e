"""`Client` (blocking) and `AsyncClient` (asyncio): the same methods, run by the same core.

One client talks to the services of one deployment with one API key. `base_url` is intake's URL:
everything a channel front end needs (interactions, timelines, customers) is there, and every
service serves the same timeline. `case_url` is the case service's, for the agents' calls;
`notification_url` and `analytics_url` are those services', for the campaign calls (notification
sends campaigns, analytics measures them). A client without the URL a call needs refuses it. One
object rather than one per service, so a front end holds one key, one retry policy and one place
to configure; addresses rather than one gateway URL, because the services are deployed apart
(ports 8001 to 8004 under `make run`).
"""

import asyncio
import random
import time
from collections.abc import Generator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from crm_client import operations as ops
from crm_client._core import Call, Outcome, Retry, Send, Sleep, Step, conduct
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

T = TypeVar("T")
# Looked up at each wait, so tests can make the waits instant.
_sleep = time.sleep
_asleep = asyncio.sleep


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        *,
        case_url: str | None = None,
        notification_url: str | None = None,
        analytics_url: str | None = None,
        retry: Retry | None = None,
    ) -> None:
        from crm_client import __version__

        self.urls = {
            "intake": base_url,
            "case": case_url,
            "notification": notification_url,
            "analytics": analytics_url,
        }
        self.timeout = timeout
        self.retry = retry or Retry()
        self._rng = random.Random()
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"crm-client/{__version__}",
            "Accept": "application/json",
        }

    def _plan(self, call: Call[T]) -> Generator[Step, Outcome, T]:
        base = self.urls[call.service]
        if base is None:
            raise ValueError(f"{call.operation_id} is a {call.service} call: pass {call.service}_url= to the client")
        return conduct(call, base, self._headers, self.timeout, self.retry, self._rng)


def _request_kwargs(step: Send) -> dict[str, Any]:
    return {
        "params": step.params,
        "json": step.json,
        "headers": dict(step.headers),
        "timeout": step.timeout,
    }


class Client(_Base):
    """The blocking client. Use it as a context manager, or call close()."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        *,
        case_url: str | None = None,
        notification_url: str | None = None,
        analytics_url: str | None = None,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout,
            case_url=case_url,
            notification_url=notification_url,
            analytics_url=analytics_url,
            retry=retry,
        )
        # Redirects are the core's to follow: only 308, only where the call says a merged id may answer it.
        self._http = httpx.Client(follow_redirects=False, transport=transport)

    def _run(self, call: Call[T]) -> T:
        plan = self._plan(call)
        try:
            step = next(plan)
            while True:
                if isinstance(step, Sleep):
                    _sleep(step.seconds)
                    step = plan.send(None)
                    continue
                outcome: Outcome
                try:
                    outcome = self._http.request(step.method, step.url, **_request_kwargs(step))
                except httpx.TransportError as exc:
                    outcome = exc
                step = plan.send(outcome)
        except StopIteration as done:
            result: T = done.value
            return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- intake ----

    def record_interaction(self, *, idempotency_key: str | None = None, **fields: Any) -> Accepted:
        """Record one interaction (the fields of POST /v1/interactions); retried safely with one idempotency key."""
        return self._run(ops.record_interaction(idempotency_key, **fields))

    def record_batch(self, items: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None) -> list[Accepted]:
        """Record up to 1000 interactions as one write, all or nothing; one answer per item, in order."""
        return self._run(ops.record_batch(items, idempotency_key))

    def timeline(
        self,
        customer_id: str,
        *,
        wait_for: str | None = None,
        timeout_ms: int | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> Timeline:
        """A page of the customer's timeline, newest first; with wait_for, once that event is in it."""
        return self._run(
            ops.timeline(customer_id, wait_for=wait_for, timeout_ms=timeout_ms, limit=limit, before=before)
        )

    def customer(self, customer_id: str) -> Customer:
        """The customer's profile; a merged id gives the survivor's."""
        return self._run(ops.customer(customer_id))

    def set_customer_fields(self, customer_id: str, values: Mapping[str, Any]) -> CustomerFieldsChange:
        """Set the named typed fields (None clears one; others keep their values)."""
        return self._run(ops.set_customer_fields(customer_id, values))

    def change_customer_tags(
        self, customer_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> CustomerTagsChange:
        """Add and remove tags (normalised by the server: lower case, spaces as -)."""
        return self._run(ops.change_customer_tags(customer_id, add, remove))

    def merge_customers(self, customer_id: str, merged_id: str) -> MergeResult:
        """Merge merged_id into customer_id by hand (scope agent)."""
        return self._run(ops.merge_customers(customer_id, merged_id))

    def unmerge_customer(
        self,
        customer_id: str,
        merged_id: str,
        identifiers: Iterable[Mapping[str, Any]] = (),
        *,
        reason: str | None = None,
    ) -> MergeResult:
        """Undo the merge of merged_id into customer_id; `identifiers` ({"kind", "value", "channel"})
        go back to merged_id."""
        return self._run(ops.unmerge_customer(customer_id, merged_id, identifiers, reason=reason))

    # ---- case ----

    def list_cases(
        self,
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
    ) -> CaseList:
        return self._run(
            ops.list_cases(
                status=status,
                priority=priority,
                type=type,
                owner=owner,
                team=team,
                queue=queue,
                customer_id=customer_id,
                breached=breached,
                escalated=escalated,
                limit=limit,
                before=before,
                fields=fields,
                tags=tags,
            )
        )

    def queue(self, team: str, *, limit: int | None = None) -> Queue:
        return self._run(ops.queue(team, limit=limit))

    def case(self, case_id: str) -> Case:
        return self._run(ops.case(case_id))

    def open_case(
        self,
        customer_id: str,
        type: str,
        *,
        priority: str | None = None,
        team: str | None = None,
        title: str | None = None,
        case_id: str | None = None,
    ) -> CaseChange:
        return self._run(ops.open_case(customer_id, type, priority=priority, team=team, title=title, case_id=case_id))

    def assign(self, case_id: str, owner: str, *, version: int, team: str | None = None) -> CaseChange:
        return self._run(ops.assign(case_id, owner, version=version, team=team))

    def change_status(self, case_id: str, status: str, *, version: int, reason: str | None = None) -> CaseChange:
        return self._run(ops.change_status(case_id, status, version=version, reason=reason))

    def set_priority(self, case_id: str, priority: str, *, version: int, reason: str | None = None) -> CaseChange:
        return self._run(ops.set_priority(case_id, priority, version=version, reason=reason))

    def reply(
        self, case_id: str, body: str, *, version: int, channel: str = "email", author: str | None = None
    ) -> CaseChange:
        return self._run(ops.reply(case_id, body, version=version, channel=channel, author=author))

    def add_note(self, case_id: str, text: str, *, version: int, author: str) -> CaseChange:
        return self._run(ops.add_note(case_id, text, version=version, author=author))

    def link_interaction(self, case_id: str, interaction_event_id: str, *, version: int) -> CaseChange:
        return self._run(ops.link_interaction(case_id, interaction_event_id, version=version))

    def set_case_fields(self, case_id: str, values: Mapping[str, Any], if_match: int) -> CaseChange:
        return self._run(ops.set_case_fields(case_id, values, if_match))

    def change_case_tags(
        self, case_id: str, add: Iterable[str] = (), remove: Iterable[str] = (), *, if_match: int | None = None
    ) -> CaseChange:
        return self._run(ops.change_case_tags(case_id, add, remove, if_match=if_match))

    def set_agent_status(self, agent_id: str, status: str) -> AgentChange:
        return self._run(ops.set_agent_status(agent_id, status))

    # ---- campaigns ----

    def create_campaign(
        self,
        name: str,
        audience: Mapping[str, Any],
        purpose: str,
        templates: Mapping[str, Mapping[str, str]],
        *,
        send_at: datetime | None = None,
        campaign_id: str | None = None,
    ) -> Campaign:
        """Create a campaign (notification); retried safely with one campaign id."""
        return self._run(
            ops.create_campaign(name, audience, purpose, templates, send_at=send_at, campaign_id=campaign_id)
        )

    def campaigns(self, *, limit: int = 50, before: str | None = None) -> CampaignList:
        """A page of campaigns, newest first."""
        return self._run(ops.campaigns(limit=limit, before=before))

    def campaign(self, campaign_id: str) -> Campaign:
        """The campaign's status, audience size and counts."""
        return self._run(ops.campaign(campaign_id))

    def pause_campaign(self, campaign_id: str) -> Campaign:
        return self._run(ops.pause_campaign(campaign_id))

    def resume_campaign(self, campaign_id: str) -> Campaign:
        return self._run(ops.resume_campaign(campaign_id))

    def cancel_campaign(self, campaign_id: str) -> Campaign:
        return self._run(ops.cancel_campaign(campaign_id))

    def campaign_results(self, campaign_id: str) -> CampaignResults:
        """What the campaign achieved (analytics); NotFound until analytics has seen it."""
        return self._run(ops.campaign_results(campaign_id))

    def kpis(self, start: datetime | str, end: datetime | str, *, group_by: str | None = None, **filters: str) -> Kpis:
        """KPIs over [start, end) (analytics, ops); group_by: team, owner, type, tag or field.<name>."""
        return self._run(ops.kpis(start, end, group_by=group_by, **filters))

    def case_report_csv(self, start: datetime | str, end: datetime | str) -> str:
        """The CSV of the cases opened in [start, end) (analytics, ops), as text."""
        return self._run(ops.case_report_csv(start, end))

    def kpi_report_csv(self, start: datetime | str, end: datetime | str, group_by: str, **filters: str) -> str:
        """The grouped KPIs as CSV text (analytics, ops): one row per group, then the totals."""
        return self._run(ops.kpi_report_csv(start, end, group_by, **filters))


class AsyncClient(_Base):
    """The asyncio client: `Client`'s methods, awaited. Use it as an async context manager, or await aclose()."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        *,
        case_url: str | None = None,
        notification_url: str | None = None,
        analytics_url: str | None = None,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout,
            case_url=case_url,
            notification_url=notification_url,
            analytics_url=analytics_url,
            retry=retry,
        )
        self._http = httpx.AsyncClient(follow_redirects=False, transport=transport)

    async def _run(self, call: Call[T]) -> T:
        plan = self._plan(call)
        try:
            step = next(plan)
            while True:
                if isinstance(step, Sleep):
                    await _asleep(step.seconds)
                    step = plan.send(None)
                    continue
                outcome: Outcome
                try:
                    outcome = await self._http.request(step.method, step.url, **_request_kwargs(step))
                except httpx.TransportError as exc:
                    outcome = exc
                step = plan.send(outcome)
        except StopIteration as done:
            result: T = done.value
            return result

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- intake ----

    async def record_interaction(self, *, idempotency_key: str | None = None, **fields: Any) -> Accepted:
        """Record one interaction (the fields of POST /v1/interactions); retried safely with one idempotency key."""
        return await self._run(ops.record_interaction(idempotency_key, **fields))

    async def record_batch(
        self, items: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[Accepted]:
        """Record up to 1000 interactions as one write, all or nothing; one answer per item, in order."""
        return await self._run(ops.record_batch(items, idempotency_key))

    async def timeline(
        self,
        customer_id: str,
        *,
        wait_for: str | None = None,
        timeout_ms: int | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> Timeline:
        """A page of the customer's timeline, newest first; with wait_for, once that event is in it."""
        return await self._run(
            ops.timeline(customer_id, wait_for=wait_for, timeout_ms=timeout_ms, limit=limit, before=before)
        )

    async def customer(self, customer_id: str) -> Customer:
        """The customer's profile; a merged id gives the survivor's."""
        return await self._run(ops.customer(customer_id))

    async def set_customer_fields(self, customer_id: str, values: Mapping[str, Any]) -> CustomerFieldsChange:
        """Set the named typed fields (None clears one; others keep their values)."""
        return await self._run(ops.set_customer_fields(customer_id, values))

    async def change_customer_tags(
        self, customer_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> CustomerTagsChange:
        """Add and remove tags (normalised by the server: lower case, spaces as -)."""
        return await self._run(ops.change_customer_tags(customer_id, add, remove))

    async def merge_customers(self, customer_id: str, merged_id: str) -> MergeResult:
        """Merge merged_id into customer_id by hand (scope agent)."""
        return await self._run(ops.merge_customers(customer_id, merged_id))

    async def unmerge_customer(
        self,
        customer_id: str,
        merged_id: str,
        identifiers: Iterable[Mapping[str, Any]] = (),
        *,
        reason: str | None = None,
    ) -> MergeResult:
        """Undo the merge of merged_id into customer_id; `identifiers` ({"kind", "value", "channel"})
        go back to merged_id."""
        return await self._run(ops.unmerge_customer(customer_id, merged_id, identifiers, reason=reason))

    # ---- case ----

    async def list_cases(
        self,
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
    ) -> CaseList:
        return await self._run(
            ops.list_cases(
                status=status,
                priority=priority,
                type=type,
                owner=owner,
                team=team,
                queue=queue,
                customer_id=customer_id,
                breached=breached,
                escalated=escalated,
                limit=limit,
                before=before,
                fields=fields,
                tags=tags,
            )
        )

    async def queue(self, team: str, *, limit: int | None = None) -> Queue:
        return await self._run(ops.queue(team, limit=limit))

    async def case(self, case_id: str) -> Case:
        return await self._run(ops.case(case_id))

    async def open_case(
        self,
        customer_id: str,
        type: str,
        *,
        priority: str | None = None,
        team: str | None = None,
        title: str | None = None,
        case_id: str | None = None,
    ) -> CaseChange:
        return await self._run(
            ops.open_case(customer_id, type, priority=priority, team=team, title=title, case_id=case_id)
        )

    async def assign(self, case_id: str, owner: str, *, version: int, team: str | None = None) -> CaseChange:
        return await self._run(ops.assign(case_id, owner, version=version, team=team))

    async def change_status(self, case_id: str, status: str, *, version: int, reason: str | None = None) -> CaseChange:
        return await self._run(ops.change_status(case_id, status, version=version, reason=reason))

    async def set_priority(self, case_id: str, priority: str, *, version: int, reason: str | None = None) -> CaseChange:
        return await self._run(ops.set_priority(case_id, priority, version=version, reason=reason))

    async def reply(
        self, case_id: str, body: str, *, version: int, channel: str = "email", author: str | None = None
    ) -> CaseChange:
        return await self._run(ops.reply(case_id, body, version=version, channel=channel, author=author))

    async def add_note(self, case_id: str, text: str, *, version: int, author: str) -> CaseChange:
        return await self._run(ops.add_note(case_id, text, version=version, author=author))

    async def link_interaction(self, case_id: str, interaction_event_id: str, *, version: int) -> CaseChange:
        return await self._run(ops.link_interaction(case_id, interaction_event_id, version=version))

    async def set_case_fields(self, case_id: str, values: Mapping[str, Any], if_match: int) -> CaseChange:
        return await self._run(ops.set_case_fields(case_id, values, if_match))

    async def change_case_tags(
        self, case_id: str, add: Iterable[str] = (), remove: Iterable[str] = (), *, if_match: int | None = None
    ) -> CaseChange:
        return await self._run(ops.change_case_tags(case_id, add, remove, if_match=if_match))

    async def set_agent_status(self, agent_id: str, status: str) -> AgentChange:
        return await self._run(ops.set_agent_status(agent_id, status))

    # ---- campaigns ----

    async def create_campaign(
        self,
        name: str,
        audience: Mapping[str, Any],
        purpose: str,
        templates: Mapping[str, Mapping[str, str]],
        *,
        send_at: datetime | None = None,
        campaign_id: str | None = None,
    ) -> Campaign:
        """Create a campaign (notification); retried safely with one campaign id."""
        return await self._run(
            ops.create_campaign(name, audience, purpose, templates, send_at=send_at, campaign_id=campaign_id)
        )

    async def campaigns(self, *, limit: int = 50, before: str | None = None) -> CampaignList:
        """A page of campaigns, newest first."""
        return await self._run(ops.campaigns(limit=limit, before=before))

    async def campaign(self, campaign_id: str) -> Campaign:
        """The campaign's status, audience size and counts."""
        return await self._run(ops.campaign(campaign_id))

    async def pause_campaign(self, campaign_id: str) -> Campaign:
        return await self._run(ops.pause_campaign(campaign_id))

    async def resume_campaign(self, campaign_id: str) -> Campaign:
        return await self._run(ops.resume_campaign(campaign_id))

    async def cancel_campaign(self, campaign_id: str) -> Campaign:
        return await self._run(ops.cancel_campaign(campaign_id))

    async def campaign_results(self, campaign_id: str) -> CampaignResults:
        """What the campaign achieved (analytics); NotFound until analytics has seen it."""
        return await self._run(ops.campaign_results(campaign_id))

    async def kpis(
        self, start: datetime | str, end: datetime | str, *, group_by: str | None = None, **filters: str
    ) -> Kpis:
        """KPIs over [start, end) (analytics, ops); group_by: team, owner, type, tag or field.<name>."""
        return await self._run(ops.kpis(start, end, group_by=group_by, **filters))

    async def case_report_csv(self, start: datetime | str, end: datetime | str) -> str:
        """The CSV of the cases opened in [start, end) (analytics, ops), as text."""
        return await self._run(ops.case_report_csv(start, end))

    async def kpi_report_csv(self, start: datetime | str, end: datetime | str, group_by: str, **filters: str) -> str:
        """The grouped KPIs as CSV text (analytics, ops): one row per group, then the totals."""
        return await self._run(ops.kpi_report_csv(start, end, group_by, **filters))
