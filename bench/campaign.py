"""The campaign scenario of `make bench`: one campaign sent to N customers of a region nobody else
is in, timed from its creation to `completed` (targets decided per second), while the freshness
probe (`bench.load`'s fresh mode) runs beside it.

    python -m bench.campaign campaign --intake URL --notification URL --readers URL,... --customers N

Run as its own process by `bench.run`, like `bench.load`; reads the API key from BENCH_API_KEY
and prints one JSON object.
"""

import argparse
import asyncio
import json
import secrets
import string
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import uvloop

from bench.load import Http, fresh, item

TEMPLATES = {"en": {"subject": "{campaign_name}", "body": "Bench campaign {campaign_id} for {customer_id}."}}
CONCURRENCY = 32  # the PUTs of the setup, as the single POST scenario's clients


def fresh_region() -> str:
    """A region code (intake's pattern: two letters, a dash, up to three more) no other scenario uses."""
    return "ZZ-" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(3))


async def setup(http: Http, a: argparse.Namespace, region: str) -> dict[str, float]:
    """The audience: N new customers (batches of 1,000 inbound interactions, each from a new email,
    which makes the email deliverable), each with the region and an explicit marketing grant
    (one PUT each). Seconds each step took."""
    run = uuid.uuid4().hex[:8]
    ids: list[str] = []
    t0 = time.monotonic()
    for start in range(0, a.customers, 1000):
        items = [item(f"camp{run}-{i}@example.com") for i in range(start, min(start + 1000, a.customers))]
        status, body = await http.post(f"{a.intake}/v1/interactions:batch", {"items": items})
        if status != 202:
            raise RuntimeError(f"creating customers failed: {status} {body}")
        ids += [out["customer_id"] for out in body["items"]]
    t1 = time.monotonic()
    queue = iter(ids)

    async def worker() -> None:
        for cid in queue:  # one shared iterator: each customer taken once
            url = f"{a.intake}/v1/customers/{cid}"
            for path, body in (
                ("preferences", {"region": region, "preferred_channel": "email"}),
                ("consent", {"consents": [{"purpose": "marketing", "channel": None, "granted": True}]}),
            ):
                status, answer = await http.put(f"{url}/{path}", body)
                if status != 200:
                    raise RuntimeError(f"PUT {path} failed: {status} {answer}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return {"customers_s": t1 - t0, "region_and_consent_s": time.monotonic() - t1}


async def send(http: Http, a: argparse.Namespace, region: str) -> dict[str, Any]:
    """Create the campaign, then poll it (every 0.2 s) until it is completed."""
    campaign_id = f"bench-{uuid.uuid4().hex[:12]}"
    body = {"campaign_id": campaign_id, "name": "Bench campaign", "audience": {"region": region},
            "purpose": "marketing", "templates": TEMPLATES}  # fmt: skip
    url = f"{a.notification}/v1/campaigns"
    t0 = time.monotonic()
    status, made = await http.post(url, body)
    if status != 201:
        raise RuntimeError(f"creating the campaign failed: {status} {made}")
    sending_after: float | None = None
    deadline = t0 + a.send_timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        status, c = await http.get(f"{url}/{campaign_id}")
        if status != 200:
            continue
        if c["status"] == "sending" and sending_after is None:
            sending_after = time.monotonic() - t0
        if c["status"] == "completed":
            return {"campaign": c, "sending_after_s": sending_after}
        if c["status"] in ("cancelled", "paused"):
            raise RuntimeError(f"campaign {c['status']}: {c}")
    raise RuntimeError(f"campaign not completed after {a.send_timeout:.0f} s")


async def campaign(a: argparse.Namespace) -> dict[str, Any]:
    region = fresh_region()
    async with Http(CONCURRENCY) as http:
        took = await setup(http, a, region)
        # The probe waits for the stack to have projected the setup, warms up, then says so: the
        # campaign is created only then, and the probe stops once it is completed.
        sampling, stop = asyncio.Event(), asyncio.Event()
        probe = asyncio.create_task(fresh(a, sampling, stop))
        await asyncio.wait([probe, asyncio.create_task(sampling.wait())], return_when=asyncio.FIRST_COMPLETED)
        if probe.done():
            probe.result()  # its error, if any
            raise RuntimeError("the freshness probe ended before the campaign started")
        try:
            sent = await send(http, a, region)
        finally:
            stop.set()
            probe_result = await probe
    c = sent["campaign"]
    return {"customers": a.customers, "region": region, **took, "campaign_id": c["campaign_id"],
            "audience_size": c["audience_size"], "counts": c["counts"], "created_at": c["created_at"],
            "completed_at": c["updated_at"], "sending_after_s": sent["sending_after_s"],
            "campaign_rate_per_s": a.campaign_rate, "fresh": probe_result}  # fmt: skip


def send_seconds(result: dict[str, Any]) -> float:
    """Creation to `completed`, by notification's own clock (the campaign's created_at and the
    updated_at of its last change, the completion)."""
    created, completed = (datetime.fromisoformat(result[k]) for k in ("created_at", "completed_at"))
    return (completed - created).total_seconds()


def decisions_per_s(result: dict[str, Any]) -> float:
    return float(result["audience_size"]) / max(send_seconds(result), 1e-9)


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, measured) of the scenario's rows in the results table."""
    f = result["fresh"]
    return [
        (f"campaign send ({result['customers']:,} customers)", f"{decisions_per_s(result):,.0f} decisions/s"),
        (f"freshness during campaign p50 ({f['rate']:,.0f} interactions/s)", f"{f['p50_ms']:,.1f} ms"),
        (f"freshness during campaign p99 ({f['rate']:,.0f} interactions/s)", f"{f['p99_ms']:,.1f} ms"),
    ]


def note(result: dict[str, Any]) -> str:
    f, counts = result["fresh"], result["counts"]
    suppressed = sum(counts.get("suppressed", {}).values())
    sending = result["sending_after_s"]
    return (
        f"{result['customers']:,} customers made by 1,000-item batches in {result['customers_s']:.1f} s, region"
        f" {result['region']} and a marketing grant set for each (a PUT each) in"
        f" {result['region_and_consent_s']:.1f} s; campaign (purpose marketing, audience the region,"
        f" CAMPAIGN_RATE_PER_S {result['campaign_rate_per_s']:,.0f}) created once the stack had projected that"
        f" and the probe had warmed up: {result['audience_size']:,} targets decided in"
        f" {send_seconds(result):.1f} s from creation to completed"
        f" (first seen sending after {'n/a' if sending is None else f'{sending:.1f} s'}: analytics resolving the"
        f" audience); {counts.get('scheduled', 0):,} scheduled, {counts.get('sent', 0):,} sent,"
        f" {suppressed:,} suppressed; probe meanwhile {f['sent']:,} sent at {f['rate']:.0f}/s,"
        f" {f['samples']} samples, {f['missed']} missed or cut off"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["campaign"])
    p.add_argument("--intake", required=True)
    p.add_argument("--notification", required=True)
    p.add_argument("--readers", required=True, help="comma-separated service URLs whose timelines count")
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--campaign-rate", type=float, required=True, help="the stack's CAMPAIGN_RATE_PER_S (reported)")
    p.add_argument("--send-timeout", type=float, default=3000)  # 10,000 at ~10/s: ~17 min
    # the freshness probe's own (bench.load fresh)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--sample-every", type=int, default=10)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=0)
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--cpu-pids", default="")
    a = p.parse_args(argv)
    print(json.dumps(uvloop.run(campaign(a))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
