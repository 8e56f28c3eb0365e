"""What the chaos tests share: clients that retry like the API asks, a steady mixed load of
interactions and case commands, the checks that nothing was lost or applied twice, and the
figures each test prints at the end of the run (conftest.py collects them)."""

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from crmtools.cli import group_lags
from crmtools.devstack import Stack

from tests.conftest import api_client
from tests.e2e.conftest import Accepted, digests, interaction, metric_total, timeline_ids
from tests.notification.receivers import SmtpServer

CONVERGE_S = 30  # docs/product.md §12: all four digests equal within 30 s after recovery
CASE_EFFECTS = ("crm.case.opened.v1", "crm.case.interaction_linked.v1")
DUPLICATES = "crm_events_duplicate_total"  # events a consumer dropped as already applied


@dataclass
class Figures:
    """One chaos test's figures, printed as one line in the terminal summary."""

    test: str
    started: float = field(default_factory=time.monotonic)
    accepted_events: int = 0
    interactions: int = 0
    case_commands: int = 0
    kills: list[tuple[str, float]] = field(default_factory=list)
    outage_s: float | None = None
    unavailable_503: int = 0
    converged_s: float | None = None
    duplicates_absorbed: int | None = None
    republished: int | None = None
    unread_republished_again: int | None = None
    outcome: str = "incomplete"

    def kill(self, name: str) -> None:
        self.kills.append((name, time.monotonic() - self.started))

    def line(self) -> str:
        parts = [
            f"{self.test}: {self.outcome}",
            f"events accepted {self.accepted_events} ({self.interactions} interactions)",
            f"case commands {self.case_commands}",
        ]
        if self.kills:
            parts.append("kills " + ", ".join(f"{n}@{t:.1f}s" for n, t in self.kills))
        if self.outage_s is not None:
            parts.append(f"outage {self.outage_s:.1f} s")
        parts.append(f"503s {self.unavailable_503}")
        if self.converged_s is not None:
            parts.append(f"converged {self.converged_s:.1f} s after recovery")
        if self.duplicates_absorbed is not None:
            parts.append(f"duplicates absorbed {self.duplicates_absorbed}")
        if self.republished is not None:
            parts.append(f"republished {self.republished}")
        if self.unread_republished_again is not None:
            parts.append(f"not read back, published again {self.unread_republished_again}")
        return "; ".join(parts)


class Client:
    """A channel front end that does what the API asks: retry 503s and lost connections with the
    same Idempotency-Key until the request is accepted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted = Accepted()
        self.statuses: Counter[int] = Counter()
        self.retry_after_missing = 0

    async def post(self, client: httpx.AsyncClient, body: dict[str, Any], give_up_s: float = 90) -> dict[str, Any]:
        key = str(uuid.uuid4())
        deadline = time.monotonic() + give_up_s
        while time.monotonic() < deadline:
            try:
                r = await client.post(f"{self.url}/v1/interactions", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            self.statuses[r.status_code] += 1
            if r.status_code == 202:
                answer: dict[str, Any] = r.json()
                self.accepted.add(answer)
                return answer
            if r.status_code == 503:
                if "retry-after" not in r.headers:
                    self.retry_after_missing += 1
                await asyncio.sleep(float(r.headers.get("retry-after", "1")) / 4)
                continue
            raise AssertionError(f"unexpected {r.status_code}: {r.text}")
        raise AssertionError("not accepted in time")


class AgentClient:
    """An agent's desk that retries like the API asks: each command names the version it decided
    on; after a lost answer (a kill) or a 503 it reloads the case and repeats only what did not happen."""

    def __init__(self, case_url: str) -> None:
        self.url = case_url
        self.statuses: Counter[int] = Counter()
        self.retry_after_missing = 0

    async def _pause(self, r: httpx.Response) -> None:
        self.statuses[r.status_code] += 1
        if r.status_code == 503:
            if "retry-after" not in r.headers:
                self.retry_after_missing += 1
            await asyncio.sleep(float(r.headers.get("retry-after", "1")) / 4)
        else:
            await asyncio.sleep(0.1)

    async def get(self, client: httpx.AsyncClient, case_id: str) -> dict[str, Any] | None:
        while True:
            try:
                r = await client.get(f"{self.url}/v1/cases/{case_id}")
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if r.status_code == 404:
                return None
            if r.status_code == 200:
                case: dict[str, Any] = r.json()
                return case
            assert r.status_code == 503, r.text  # while the database restarts
            await self._pause(r)

    async def open(self, client: httpx.AsyncClient, customer_id: str, case_id: str) -> None:
        body = {"customer_id": customer_id, "type": "repair", "priority": "high", "case_id": case_id}
        while True:
            try:
                r = await client.post(f"{self.url}/v1/cases", json=body)
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if r.status_code in (200, 201):  # 200: our own earlier try had opened it
                self.statuses[r.status_code] += 1
                return
            assert r.status_code in (404, 503), r.text  # 404: the customer has not reached case yet
            await self._pause(r)

    async def command(
        self, client: httpx.AsyncClient, case_id: str, path: str, body: dict[str, Any], done: Any
    ) -> None:
        while True:
            case = await self.get(client, case_id)
            assert case is not None
            if done(case):
                return
            try:
                r = await client.post(
                    f"{self.url}/v1/cases/{case_id}/{path}", json=body, headers={"If-Match": f'"{case["version"]}"'}
                )
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if r.status_code == 200:
                self.statuses[200] += 1
                return
            assert r.status_code in (409, 503), r.text  # 409: it moved on (maybe our own lost write)
            await self._pause(r)

    async def work_case(self, client: httpx.AsyncClient, customer_id: str, case_id: str, owner: str) -> None:
        """Open, assign, start and resolve one case: four commands, each to take effect once."""
        await self.open(client, customer_id, case_id)
        await self.command(client, case_id, "assign", {"owner": owner}, lambda c: c["owner"] == owner)
        await self.command(client, case_id, "status", {"status": "open"}, lambda c: c["status"] != "new")
        await self.command(client, case_id, "status", {"status": "resolved"}, lambda c: c["status"] == "resolved")


class MixedLoad:
    """A steady load of interactions (some of them complaints, which open cases and so make case
    and notification publish) and agents working cases by hand, until told to stop."""

    def __init__(
        self,
        stack: Stack,
        prefix: str,
        customers: int,
        seed: int,
        rate_per_s: float = 25,
        agents: int = 3,
        complaint_share: float = 0.1,
        case_url: str | None = None,
    ) -> None:
        self.stack = stack
        self.emails = [f"{prefix}-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(customers)]
        self.rng = random.Random(seed)
        self.rate_per_s = rate_per_s
        self.agents = agents
        self.complaint_share = complaint_share
        self.intake = Client(stack.services["intake"].url)
        self.desk = AgentClient(case_url or stack.services["case"].url)
        self.interactions: Counter[str] = Counter()  # accepted, by customer id
        self.complaints: dict[str, list[str]] = defaultdict(list)  # customer id -> complaint event ids
        self.cases: dict[str, str] = {}  # case id -> customer id, for cases worked to the end
        self.customer_ids: list[str] = []
        self._stop = asyncio.Event()
        self.running: asyncio.Task[None] | None = None
        self.duplicates_before: dict[str, float] = {}

    @property
    def accepted(self) -> Accepted:
        return self.intake.accepted

    def progress(self) -> tuple[int, int]:
        """Interactions accepted and cases worked so far."""
        return sum(self.interactions.values()), len(self.cases)

    def figures(self, figures: Figures) -> None:
        figures.accepted_events = sum(len(ids) for ids in self.accepted.by_customer.values())
        figures.interactions = sum(self.interactions.values())
        figures.case_commands = 4 * len(self.cases)
        figures.unavailable_503 = self.intake.statuses[503] + self.desk.statuses[503]

    async def _interact(self, client: httpx.AsyncClient, email: str) -> None:
        body = interaction(email, self.rng)
        if self.rng.random() < self.complaint_share:
            body["kind"], body["direction"] = "complaint", "inbound"  # inbound: what opens (or joins) a case
        answer = await self.intake.post(client, body)
        customer = answer["customer_id"]
        self.interactions[customer] += 1
        if body["kind"] == "complaint":
            self.complaints[customer].append(answer["event_ids"][-1])  # the interaction, after any customer.created

    async def seed(self) -> None:
        """One plain interaction per customer first, so every customer exists before agents open cases."""
        async with api_client(timeout=10) as client:
            for email in self.emails:
                answer = await self.intake.post(client, {**interaction(email, self.rng), "kind": "note"})
                self.interactions[answer["customer_id"]] += 1
                self.customer_ids.append(answer["customer_id"])

    async def start(self) -> None:
        """Seed, note each service's duplicates so far, and run in the background until stop()."""
        await self.seed()
        self.duplicates_before = await metric_sums(self.stack, DUPLICATES)
        self.running = asyncio.create_task(self.run(self._stop))

    def is_running(self) -> bool:
        return self.running is not None and not self.running.done()

    async def stop(self, figures: Figures) -> None:
        """Stop, let what is in flight finish, and fill in the load's figures."""
        assert self.running is not None
        self._stop.set()
        await asyncio.wait_for(self.running, 60)
        self.figures(figures)

    async def duplicates_absorbed(self, restarted: Collection[str] = ()) -> int:
        """Events the services dropped as already applied since start() (`restarted`: services
        whose processes started again since, counting from 0)."""
        return int(sum(rose_by(self.duplicates_before, await metric_sums(self.stack, DUPLICATES), restarted).values()))

    async def run(self, stop: asyncio.Event) -> None:
        concurrency = 6

        async def channel(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                await self._interact(client, self.rng.choice(self.emails))
                await asyncio.sleep(concurrency / self.rate_per_s)

        async def agent(n: int, client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                case_id, customer = str(uuid.uuid4()), self.rng.choice(self.customer_ids)
                await self.desk.work_case(client, customer, case_id, f"agent-{n}")
                self.cases[case_id] = customer
                await asyncio.sleep(0.5)  # an agent's pace, not a benchmark's

        async with api_client(timeout=5) as client:
            await asyncio.gather(
                *(channel(client) for _ in range(concurrency)), *(agent(n, client) for n in range(self.agents))
            )


async def _query(stack: Stack, service: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.postgres.dsn(f"crm_{service}"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def stored_events(stack: Stack, customers: Collection[str]) -> dict[str, set[str]]:
    """Every event the four services stored (accepted, decided, derived) about these customers:
    what every timeline must hold once converged."""
    out: dict[str, set[str]] = {c: set() for c in customers}
    for name in stack.services:
        rows = await _query(
            stack, name, "SELECT subject, event_id::text AS id FROM events WHERE subject = ANY($1::text[])", list(out)
        )
        for r in rows:
            out[r["subject"]].add(r["id"])
    return out


async def wait_all_converged(stack: Stack, customers: Collection[str], recovered: float) -> float:
    """Until one pass finds, for every customer, the four digests equal and counting every stored
    event; within CONVERGE_S of `recovered` (a time.monotonic()). Returns the seconds it took."""
    last: dict[str, Any] = {}
    async with api_client(timeout=10) as client:
        while True:
            stored = await stored_events(stack, customers)
            lagging = []
            for customer in customers:
                d = await digests(stack, customer, client)
                if len(set(d.values())) != 1 or next(iter(d.values()))[0] != len(stored[customer]):
                    lagging.append(customer)
                    last = {"customer": customer, "stored": len(stored[customer]), "digests": d}
                    break
            if not lagging:
                return time.monotonic() - recovered
            if time.monotonic() - recovered > CONVERGE_S:
                raise AssertionError(
                    f"not converged {CONVERGE_S} s after recovery: {last}; {await _where(stack, client)}"
                )
            await asyncio.sleep(0.25)


async def _where(stack: Stack, client: httpx.AsyncClient) -> str:
    """For a failure message: each group's lag behind its committed offsets, and each consumer's
    own lag gauges that are not 0, so a stuck consumer can be told from a slow one."""
    groups = [f"crm-{name}" for name in stack.services]
    try:
        lags = await asyncio.wait_for(group_lags(stack.broker.bootstrap, groups), 30)
        committed = str({f"{g}/{t}": {p: n for p, n in lag.items() if n} for (g, t), lag in lags.items()})
    except Exception as exc:  # the message must not hide the failure it explains
        committed = f"not read ({type(exc).__name__}: {exc})"
    gauges = {}
    for name, svc in stack.services.items():
        lines = (await client.get(f"{svc.url}/metrics")).text.splitlines()
        gauges[name] = [line for line in lines if line.startswith("crm_consumer_lag{") and not line.endswith(" 0.0")]
    return f"committed lag {committed}; lag gauges not 0: {gauges}"


async def assert_recovered(stack: Stack, load: MixedLoad, smtp: SmtpServer, recovered: float, figures: Figures) -> None:
    """After recovery: every service converged within CONVERGE_S, nothing lost, nothing applied twice."""
    figures.converged_s = await wait_all_converged(stack, load.accepted.by_customer, recovered)
    await assert_nothing_lost(stack, load, recovered)
    await assert_applied_once(stack, load, smtp, recovered)


async def assert_nothing_lost(stack: Stack, load: MixedLoad, recovered: float) -> None:
    """Each timeline holds exactly the stored events, each once, and the stored ones include every
    event intake accepted; one interaction event per request answered 202. Events still being
    made (a message sent just now) get the rest of the CONVERGE_S bound to arrive everywhere."""
    for customer, ids in load.accepted.by_customer.items():
        assert len(ids) == len(set(ids)) == load.interactions[customer] + 1  # + customer.created
    while True:
        stored = await stored_events(stack, list(load.accepted.by_customer))
        differ = []
        for customer, ids in load.accepted.by_customer.items():
            assert set(ids) <= stored[customer]
            for svc in stack.services.values():
                got = await timeline_ids(svc.url, customer)
                assert len(got) == len(set(got)), f"{svc.name}: an event twice on {customer}'s timeline"
                if set(got) != stored[customer]:
                    differ.append((svc.name, customer, stored[customer] ^ set(got)))
        if not differ:
            return
        assert time.monotonic() - recovered < CONVERGE_S, f"timelines differ from the stores: {differ[:3]}"
        await asyncio.sleep(0.5)


async def assert_applied_once(stack: Stack, load: MixedLoad, smtp: SmtpServer, recovered: float) -> None:
    """Side effects, not just timelines (whose primary key hides repeats), happened once:
    analytics counted each interaction once, each complaint opened or joined a case once, each
    agent's command took effect once, and notification decided and sent each message once."""
    customers = list(load.accepted.by_customer)
    async with api_client(timeout=10) as client:
        # analytics' insights (its KPI fold) converge within the same bound
        analytics = load.stack.services["analytics"].url
        for customer in customers:
            while True:
                r = await client.get(f"{analytics}/v1/customers/{customer}/insights")
                got = r.json() if r.status_code == 200 else {}
                want = (load.interactions[customer], len(load.complaints[customer]))
                if (got.get("rfm", {}).get("frequency"), got.get("complaints")) == want:
                    break
                assert time.monotonic() - recovered < CONVERGE_S, f"analytics insights {got} != {want}"
                await asyncio.sleep(0.25)

        for case_id, customer in load.cases.items():
            case = await load.desk.get(client, case_id)
            assert case is not None and case["status"] == "resolved" and case["customer_id"] == customer
            types = Counter(h["type"] for h in case["history"])
            assert types["crm.case.opened.v1"] == types["crm.case.assigned.v1"] == 1, types
            assert types["crm.case.status_changed.v1"] == 2, types

        for customer in customers:
            r = await client.get(
                f"{stack.services['notification'].url}/v1/notifications", params={"customer_id": customer, "limit": 500}
            )
            decided = Counter((n["rule"], n["source_event_id"], n["recipient"]) for n in r.json()["items"])
            assert max(decided.values(), default=1) == 1, [k for k, v in decided.items() if v > 1]

    rows = await _query(
        stack,
        "case",
        "SELECT coalesce(data->>'opened_by', data->>'interaction_event_id') AS interaction FROM events"
        " WHERE type = ANY($1::text[]) AND subject = ANY($2::text[])",
        list(CASE_EFFECTS),
        customers,
    )
    effects = Counter(r["interaction"] for r in rows if r["interaction"])
    complaints = [i for ids in load.complaints.values() for i in ids]
    wrong = {i: effects[i] for i in complaints if effects[i] != 1}
    assert not wrong, f"complaints whose case effect is not exactly one: {list(wrong.items())[:5]}; {len(rows)} rows"

    sent = Counter(m["X-CRM-Notification-Id"] for m in smtp.messages)
    assert max(sent.values(), default=1) == 1, [k for k, v in sent.items() if v > 1]


async def metric_sums(stack: Stack, name: str) -> dict[str, float]:
    """Each service process's total of a counter (a restarted process starts again from 0)."""
    out = {}
    async with api_client(timeout=10) as client:
        for svc_name, svc in stack.services.items():
            out[svc_name] = metric_total((await client.get(f"{svc.url}/metrics")).text, name)
    return out


def rose_by(before: dict[str, float], after: dict[str, float], restarted: Collection[str] = ()) -> dict[str, float]:
    return {n: after[n] - (0 if n in restarted else before[n]) for n in after}
