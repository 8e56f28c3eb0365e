"""The load process: an asyncio aiohttp client on uvloop, run as its own process by `bench.run`.

    python -m bench.load <mode> --intake URL --readers URL,URL,... --duration S [...]

Reads the API key from BENCH_API_KEY (never from the command line) and prints one JSON object.
Modes: batch (1,000-item batches), single (N concurrent clients), fresh (paced single POSTs,
a sample waited for in every timeline), seed (one customer with N events), read (paced GETs).

aiohttp, not httpx: the load generator shares the machine's two cores with the stack it
measures, and httpx spent ~3 ms of CPU per single POST (more than intake itself), so it was
the first bound of the single-POST figure and took cores from every other one.
"""

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import uvloop

from bench import cpu

CONTENT = "Bench interaction: the customer asked about the delivery date of order 4711 and a refund. " * 2


def item(email: str) -> dict[str, Any]:
    return {
        "customer": {"email": email},
        "channel": "web",
        "direction": "inbound",
        "kind": "message",
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": CONTENT,
        "metadata": {"bench": True},
    }


class Http:
    """The few calls the scenarios make: JSON in, (status, parsed JSON or None) out."""

    def __init__(self, concurrency: int) -> None:
        key = os.environ["BENCH_API_KEY"]
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {key}"},
            connector=aiohttp.TCPConnector(limit=concurrency + 8),
            timeout=aiohttp.ClientTimeout(total=90),
        )

    async def __aenter__(self) -> "Http":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def post(self, url: str, body: Any) -> tuple[int, Any]:
        data = orjson.dumps(body)
        async with self._session.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
            return r.status, await _json(r)

    async def put(self, url: str, body: Any) -> tuple[int, Any]:
        data = orjson.dumps(body)
        async with self._session.put(url, data=data, headers={"Content-Type": "application/json"}) as r:
            return r.status, await _json(r)

    async def get(self, url: str, params: dict[str, str | int] | None = None) -> tuple[int, Any]:
        async with self._session.get(url, params=params) as r:
            return r.status, await _json(r)

    async def text(self, url: str) -> str:
        async with self._session.get(url) as r:
            return await r.text()


async def _json(r: aiohttp.ClientResponse) -> Any:
    raw = await r.read()
    return orjson.loads(raw) if raw and r.content_type == "application/json" else None


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def latency_figures(
    lat: list[float], errors: int, elapsed: float, cpu_s: dict[str, float], idle_wait_s: float, idle: bool
) -> dict[str, Any]:
    """What the request-rate modes (single, read) report: `lat` holds the answered requests' latencies."""
    return {
        "cpu_s": cpu_s,
        "cpu_window_s": elapsed,
        "requests": len(lat),
        "errors": errors,
        "rate": len(lat) / elapsed,
        "p50_ms": (pct(lat, 0.5) or 0) * 1000,
        "p99_ms": (pct(lat, 0.99) or 0) * 1000,
        "idle_wait_s": idle_wait_s,
        "idle": idle,
    }


async def wait_all(http: Http, readers: list[str], customer: str, event: str, limit_s: float = 60) -> bool:
    """True once the event is in every reader's timeline; False after limit_s (the API waits 30 s at most per call)."""
    deadline = time.monotonic() + limit_s

    async def one(url: str) -> bool:
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                return False
            # A page of one: what is measured is when the event is there, not the page around it.
            # (The probe's long-polls are still ~a third of case's and notification's CPU at 500/s.)
            params: dict[str, str | int] = {"wait_for": event, "timeout_ms": min(left, 30_000), "limit": 1}
            status, _ = await http.get(f"{url}/v1/customers/{customer}/timeline", params=params)
            if status != 504:
                return status == 200

    results = await asyncio.gather(*(one(u) for u in readers))
    return all(results)


async def batch(a: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    accepted = 0
    errors = 0
    last: tuple[float, str, str] | None = None
    customers: set[str] = set()  # a sample, for the scale-out's digest check
    deadline = time.monotonic() + a.duration
    async with Http(a.concurrency) as http:

        async def worker(w: int) -> None:
            nonlocal accepted, errors, last
            n = 0
            while time.monotonic() < deadline:
                items = [item(f"b{run}-{w}-{(n * 1000 + i) % a.customers}@example.com") for i in range(1000)]
                n += 1
                status, body = await http.post(f"{a.intake}/v1/interactions:batch", {"items": items})
                if status != 202:
                    errors += 1
                    continue
                accepted += len(items)
                out = body["items"][-1]
                last = (time.monotonic(), out["customer_id"], out["event_id"])
                if len(customers) < CUSTOMER_SAMPLE:
                    customers.add(out["customer_id"])

        meter = cpu.Meter(cpu.parse_pids(a.cpu_pids))
        start = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(a.concurrency)))
        elapsed = time.monotonic() - start
        lag = caught_up = None
        if last is not None:
            # waits for the backlog to drain too, so the next scenario starts on an idle stack
            ok = await wait_all(http, a.readers.split(","), last[1], last[2], a.drain_timeout)
            lag = time.monotonic() - last[0] if ok else None
            if a.metrics:  # every instance, not only the one that applied the last event
                at = await wait_caught_up(http, a.metrics.split(","), a.drain_timeout)
                caught_up = at - start if at is not None else None
        # to the end of the drain: what the projections did after the last batch is part of its cost
        cpu_s = meter.spent()
    return {"accepted": accepted, "errors": errors, "elapsed_s": elapsed, "rate": accepted / elapsed, "lag_s": lag,
            "caught_up_s": caught_up, "customers": sorted(customers),
            "cpu_s": cpu_s, "cpu_window_s": time.monotonic() - start}  # fmt: skip


CUSTOMER_SAMPLE = 40
QUIET_S = 2.0  # nothing applied anywhere for this long (lag gauges are set once a second)


async def wait_caught_up(http: Http, urls: list[str], limit_s: float) -> float | None:
    """When every instance had applied everything: the time of the last change seen in what any
    of them applied, once every consumer lag and outbox backlog reads 0 and nothing changed for
    QUIET_S (polled every 0.25 s); None after limit_s. With partitions split between instances,
    the last event sent is not the last one applied."""
    deadline = time.monotonic() + limit_s
    last_change, applied_before = time.monotonic(), -1.0
    while time.monotonic() < deadline:
        texts = await asyncio.gather(*(http.text(f"{url}/metrics") for url in urls))
        lines = [line for text in texts for line in text.splitlines()]
        backlog = any(line.startswith(BACKLOG_GAUGES) and float(line.rsplit(" ", 1)[1]) > 0 for line in lines)
        applied = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("crm_events_applied_total{"))
        now = time.monotonic()
        if applied != applied_before:
            last_change, applied_before = now, applied
        elif not backlog and now - last_change >= QUIET_S:
            return last_change
        await asyncio.sleep(0.25)
    return None


async def single(a: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    lat: list[float] = []
    errors = 0
    async with Http(a.concurrency) as http:
        idle_wait_s, idle = await wait_idle(http, a.readers.split(","), a.drain_timeout)
        deadline = time.monotonic() + a.duration

        async def worker(w: int) -> None:
            nonlocal errors
            n = 0
            while time.monotonic() < deadline:
                n += 1
                t0 = time.perf_counter()
                try:
                    status, _ = await http.post(f"{a.intake}/v1/interactions", item(f"s{run}-{w}-{n % 50}@example.com"))
                except aiohttp.ClientError:
                    errors += 1
                    continue
                if status == 202:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1

        meter = cpu.Meter(cpu.parse_pids(a.cpu_pids))
        start = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(a.concurrency)))
        elapsed = time.monotonic() - start
        cpu_s = meter.spent()
    return latency_figures(lat, errors, elapsed, cpu_s, idle_wait_s, idle)


async def fresh(
    a: argparse.Namespace, sampling: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> dict[str, Any]:
    """Paced single POSTs for a.duration seconds after the warm-up, or, given `stop`, until it is
    set (another scenario measured meanwhile: `sampling` is set once the warm-up is over)."""
    run = uuid.uuid4().hex[:8]
    fresh_s: list[float] = []
    sent = errors = missed = 0
    readers = a.readers.split(",")
    tasks: list[asyncio.Task[None]] = []
    async with Http(256) as http:
        idle_wait_s, idle = await wait_idle(http, readers, a.drain_timeout)

        async def one(n: int, sample: bool) -> None:
            nonlocal sent, errors, missed
            status, body = await http.post(f"{a.intake}/v1/interactions", item(f"f{run}-{n % 200}@example.com"))
            if status != 202:
                errors += 1
                return
            sent += 1
            if sample:
                t0 = time.perf_counter()
                if await wait_all(http, readers, body["customer_id"], body["event_id"]):
                    fresh_s.append(time.perf_counter() - t0)
                else:
                    missed += 1

        meter = cpu.Meter(cpu.parse_pids(a.cpu_pids))
        start = time.monotonic()
        # The first seconds of paced load from idle are a ramp, not the steady state the figure
        # is about: the client opens its connections and the services' loops and pools wake up
        # (on a fresh stack the slowest 3 % of samples all fell in the first 0.7 s). They are
        # sent but not sampled.
        warm = int(a.rate * a.warmup)
        total = warm + int(a.rate * a.duration)
        skipped = 0
        for n in itertools.count():
            if (n >= total) if stop is None else stop.is_set():
                break
            if n == warm and sampling is not None:
                sampling.set()
            delay = start + n / a.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if sum(not t.done() for t in tasks[-256:]) >= 128:
                skipped += 1  # intake is behind: do not let the offered load pile up without bound
                continue
            tasks.append(asyncio.create_task(one(n, n >= warm and n % a.sample_every == 0)))
        elapsed = time.monotonic() - start
        _, late = await asyncio.wait(tasks, timeout=40) if tasks else (set(), set())
        for t in late:
            t.cancel()
        missed += len(late)
        cpu_s = meter.spent()
        cpu_window_s = time.monotonic() - start
    return {
        "cpu_s": cpu_s,
        "cpu_window_s": cpu_window_s,
        "sent": sent,
        "errors": errors,
        "rate": sent / elapsed,
        "samples": len(fresh_s),
        "missed": missed,
        "skipped_over_128_in_flight": skipped,
        "warmup_s": a.warmup,
        "idle_wait_s": idle_wait_s,
        "idle": idle,
        "p50_ms": (pct(fresh_s, 0.5) or 0) * 1000,
        "p99_ms": (pct(fresh_s, 0.99) or 0) * 1000,
    }


async def seed(a: argparse.Namespace) -> dict[str, Any]:
    email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
    last: dict[str, str] = {}
    async with Http(4) as http:
        left = a.events
        while left > 0:
            n = min(1000, left)
            items = [item(email) for _ in range(n)]
            status, body = await http.post(f"{a.intake}/v1/interactions:batch", {"items": items})
            if status != 202:
                raise RuntimeError(f"seeding failed: {status} {body}")
            last = body["items"][-1]
            left -= n
        await wait_all(http, a.readers.split(","), last["customer_id"], last["event_id"])
    return {"customer_id": last["customer_id"], "events": a.events}


BACKLOG_GAUGES = ("crm_consumer_lag{", "crm_outbox_backlog{")


async def wait_idle(http: Http, readers: list[str], limit_s: float) -> tuple[float, bool]:
    """(seconds waited, idle?): until no service has consumer lag or an outbox
    backlog, and no service applied anything over the last second, so a
    scenario is measured on a stack that has finished projecting what the earlier ones sent.
    The second condition is not redundant: lag gauges are set only once a second, so a gauge can
    still read 0 for a moment after new events arrived."""
    start = time.monotonic()
    applied_before = -1.0
    while True:
        texts = [await http.text(f"{url}/metrics") for url in readers]
        lines = [line for text in texts for line in text.splitlines()]
        backlog = any(line.startswith(BACKLOG_GAUGES) and float(line.rsplit(" ", 1)[1]) > 0 for line in lines)
        applied = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("crm_events_applied_total{"))
        busy = backlog or applied != applied_before
        applied_before = applied
        waited = time.monotonic() - start
        if not busy or waited > limit_s:
            return waited, not busy
        await asyncio.sleep(1.0)


async def read(a: argparse.Namespace) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    url = f"{a.readers.split(',')[0]}/v1/customers/{a.customer}/timeline"
    async with Http(64) as http:
        idle_wait_s, idle = await wait_idle(http, a.readers.split(","), a.drain_timeout)

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                status, body = await http.get(url, params={"limit": 50})
            except aiohttp.ClientError:
                errors += 1
                return
            if status == 200 and len(body["events"]) == 50:
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1

        tasks: list[asyncio.Task[None]] = []
        meter = cpu.Meter(cpu.parse_pids(a.cpu_pids))
        start = time.monotonic()
        for n in range(int(a.rate * a.duration)):
            delay = start + n / a.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
        cpu_s = meter.spent()
    return latency_figures(lat, errors, elapsed, cpu_s, idle_wait_s, idle)


MODES = {"batch": batch, "single": single, "fresh": fresh, "seed": seed, "read": read}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--intake", required=True)
    p.add_argument("--readers", required=True, help="comma-separated service URLs whose timelines count")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--sample-every", type=int, default=10)
    p.add_argument("--warmup", type=float, default=2.0, help="fresh: seconds of paced load sent before sampling")
    p.add_argument("--events", type=int, default=500)
    p.add_argument("--customer", default="")
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--metrics", default="", help="batch: every instance's URL, to wait until all are caught up")
    p.add_argument("--cpu-pids", default="", help="name=pid,... whose CPU over the measured window to report")
    a = p.parse_args(argv)
    result = uvloop.run(MODES[a.mode](a))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
