"""Every panel of every shipped Grafana dashboard shows data: each query runs against a real
Prometheus server (Debian's prometheus package) scraping the four services on the embedded stack.

Prometheus gets the shipped infra/prometheus/prometheus.yml with only the targets moved to the
test stack's ports and a 1 s scrape interval. Traffic covers every metric: interactions,
timeline reads (with a 504 wait timeout), a 422, a garbage message on crm.intake.v1 (a dead
letter in every service) and one event published twice (a duplicate in every service), and once
more on a topic not its own (a wrong_topic dead letter).
"""

import asyncio
import math
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from crmtools.devstack import SERVICES, Stack
from crmtools.processes import free_port, stop_process

from contracts.topics import CASE, INTAKE
from tests.conftest import api_client, eventually
from tests.e2e.test_analytics import Script, publish, region_code
from tests.e2e.test_campaign_results import CampaignScript, campaign_results
from tests.ops.dashboards import (
    PROMETHEUS_CONFIG,
    load_prometheus_config,
    panel_queries,
    parse_label_values,
    substitute,
    variable_queries,
)

pytestmark = pytest.mark.e2e

SCRAPE_INTERVAL_S = 1


def derived_config(stack: Stack) -> dict[str, Any]:
    """The shipped config, targets rewritten to the test stack's ports; job and labels kept."""
    config = load_prometheus_config()
    config["global"]["scrape_interval"] = f"{SCRAPE_INTERVAL_S}s"
    config["global"]["evaluation_interval"] = f"{SCRAPE_INTERVAL_S}s"
    # The alert rules load too (a rule that does not parse keeps Prometheus from starting).
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / f) for f in config["rule_files"]]
    # The alerts this test makes fire (dead letters) go nowhere: not to a local Alertmanager.
    config.pop("alerting")
    moved = 0
    for scrape in config["scrape_configs"]:
        for static in scrape["static_configs"]:
            service = static["labels"]["service"]
            static["targets"] = [f"127.0.0.1:{stack.services[service].port}"]
            moved += 1
    assert moved == len(SERVICES)
    return config


class Prometheus:
    def __init__(self, binary: str, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.args = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {timeout_s} s: {self.log_path.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=10)


@pytest.fixture(scope="module")
def prometheus(prometheus_bin: str, ops_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(prometheus_bin, derived_config(ops_stack), tmp_path_factory.mktemp("prometheus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert server.proc is not None and server.proc.poll() is not None  # really stopped


# --- traffic -------------------------------------------------------------------------------


def interaction(email: str, rng: random.Random) -> dict[str, Any]:
    return {
        "customer": {"email": email},
        "channel": rng.choice(["web", "chat", "email", "sms"]),
        "direction": "inbound",
        "kind": rng.choice(["message", "request", "complaint"]),
        "occurred_at": datetime.now(UTC).isoformat(),
        "content": f"ops test {rng.randint(0, 10**6)}",
    }


async def steady_traffic(stack: Stack, client: httpx.AsyncClient, seconds: float, rng: random.Random) -> int:
    """Interactions to intake and timeline reads (read-your-writes) everywhere, for `seconds`."""
    intake = stack.services["intake"].url
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    posted = 0
    while loop.time() < end:
        email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
        r = await client.post(f"{intake}/v1/interactions", json=interaction(email, rng))
        assert r.status_code == 202, r.text
        body = r.json()
        posted += 1
        reads = [
            client.get(
                f"{svc.url}/v1/customers/{body['customer_id']}/timeline",
                params={"wait_for": body["event_id"], "timeout_ms": 5000},
            )
            for svc in stack.services.values()
        ]
        for answer in await asyncio.gather(*reads):
            assert answer.status_code == 200, answer.text
        await asyncio.sleep(0.1)
    return posted


async def error_requests(stack: Stack, client: httpx.AsyncClient) -> None:
    """One 4xx (422 validation) on intake and one 5xx (504 wait timeout) on each service."""
    r = await client.post(f"{stack.services['intake'].url}/v1/interactions", json={"channel": "pigeon"})
    assert r.status_code == 422, r.text
    for svc in stack.services.values():
        r = await client.get(
            f"{svc.url}/v1/customers/{uuid.uuid4()}/timeline",
            params={"wait_for": str(uuid.uuid4()), "timeout_ms": 10},
        )
        assert r.status_code == 504, r.text


async def poison_and_duplicate(stack: Stack) -> None:
    """A garbage message (dead letter everywhere) and an already applied event sent again on its
    own topic (an event read from another topic is dead-lettered as wrong_topic). crm.case.v1 is
    read by all four services (intake reads every topic but its own), and the complaints and
    requests of the traffic have opened cases on it."""
    bootstrap = stack.broker.bootstrap
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata
        partitions = consumer.partitions_for_topic(CASE) or set()
        assert partitions, f"{CASE} has no partitions"
        consumer.assign([TopicPartition(CASE, p) for p in partitions])
        await consumer.seek_to_beginning()
        records: list[Any] = []
        for _ in range(6):  # a case opens a moment after its interaction
            batches = await consumer.getmany(timeout_ms=5000, max_records=1)
            if records := [r for recs in batches.values() for r in recs]:
                break
        assert records, f"no event on {CASE} to send twice"
    finally:
        await consumer.stop()
    (original,) = records[:1]

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(CASE, value=b"\x00not a cloudevent\xff", key=b"ops-poison")
        await producer.send_and_wait(CASE, value=original.value, key=original.key, headers=list(original.headers))
        # and on a topic not its own: refused everywhere as wrong_topic, never applied twice
        await producer.send_and_wait(INTAKE, value=original.value, key=original.key, headers=list(original.headers))
    finally:
        await producer.stop()


# --- Prometheus API ------------------------------------------------------------------------


async def query(client: httpx.AsyncClient, prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    r = await client.get(f"{prometheus.url}/api/v1/query", params={"query": expr})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {r.status_code} {r.text}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def finite(series: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in series)


async def wait_for_series(
    client: httpx.AsyncClient, prometheus: Prometheus, expr: str, count: int, timeout_s: float
) -> list[dict[str, Any]]:
    """Until the query returns at least `count` series with a finite value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = [s for s in await query(client, prometheus, expr) if math.isfinite(float(s["value"][1]))]
        if len(result) >= count or loop.time() > deadline:
            return result
        await asyncio.sleep(0.5)


async def test_every_dashboard_panel_returns_data(ops_stack: Stack, prometheus: Prometheus) -> None:
    rng = random.Random(6)
    async with api_client(timeout=15) as client:
        # Prometheus scrapes all four services with the shipped job name and labels.
        up = await wait_for_series(client, prometheus, 'up{job="crm"} == 1', len(SERVICES), timeout_s=20)
        assert {s["metric"]["service"] for s in up} == set(SERVICES), up
        assert {s["metric"]["instance"] for s in up} == {
            f"127.0.0.1:{ops_stack.services[name].port}" for name in SERVICES
        }

        # Traffic over several scrapes, so that every rate() has two samples that differ.
        await steady_traffic(ops_stack, client, 2, rng)
        await error_requests(ops_stack, client)
        await poison_and_duplicate(ops_stack)
        # A scripted day of cases, surveys and notifications ending now, so every KPI has a value.
        day = Script(region_code(), day=datetime.now(UTC) - timedelta(hours=25))
        await publish(ops_stack.broker.bootstrap, day.build(with_notifications=True))
        # A campaign sent and answered, for the campaign gauges (sent before answered: topics differ).
        campaign = CampaignScript(day.region)
        await publish(ops_stack.broker.bootstrap, campaign.announce())
        analytics = ops_stack.services["analytics"].url
        await eventually(lambda: campaign_results(client, analytics, campaign.campaign_id, sent=1), 30, "sent")
        await publish(ops_stack.broker.bootstrap, campaign.respond())
        await steady_traffic(ops_stack, client, 4, rng)

        dead = await wait_for_series(
            client, prometheus, "sum by (service) (crm_events_deadlettered_total) > 0", len(SERVICES), 20
        )
        assert {s["metric"]["service"] for s in dead} == set(SERVICES)  # one consumer each, analytics' too
        wrong = await wait_for_series(
            client, prometheus, 'sum by (service) (crm_events_deadlettered_total{reason="wrong_topic"}) > 0', 3, 20
        )
        assert {s["metric"]["service"] for s in wrong} >= {"case", "notification", "analytics"}  # readers of intake's
        # The shipped alert on dead letters fires on the series the services really export, with
        # the labels its runbook and Alertmanager's grouping use; nothing pages.
        # (the garbage on the case topic everywhere; the case event on intake's topic in its readers)
        expected = {(name, CASE) for name in SERVICES} | {(name, INTAKE) for name in SERVICES if name != "intake"}
        firing = await wait_for_series(
            client, prometheus, 'ALERTS{alertname="CrmDeadLettersArriving", alertstate="firing"}', len(expected), 20
        )
        assert {(s["metric"]["service"], s["metric"]["topic"]) for s in firing} >= expected, firing
        assert {s["metric"]["severity"] for s in firing} == {"ticket"}
        assert await query(client, prometheus, 'ALERTS{severity="page", alertstate="firing"}') == []
        dups = await wait_for_series(
            client, prometheus, "sum by (service) (crm_events_duplicate_total) > 0", len(SERVICES), 20
        )
        assert {s["metric"]["service"] for s in dups} >= set(SERVICES)
        await steady_traffic(ops_stack, client, 2, rng)
        await asyncio.sleep(2 * SCRAPE_INTERVAL_S + 0.5)  # the last traffic is scraped

        # The exposed `service` label is kept as it is (honor_labels), not renamed.
        renamed = await query(client, prometheus, '{job="crm", exported_service!=""}')
        assert renamed == [], renamed[:3]

        # Every query of every panel of every dashboard, template variables matching anything.
        queries = panel_queries()
        assert len(queries) >= 20, queries
        empty: list[str] = []
        for q in queries:
            result = await query(client, prometheus, substitute(q.expr))
            if not result:
                empty.append(f"no series: {q}")
            elif not finite(result):
                empty.append(f"only NaN: {q} -> {result[:2]}")
        assert not empty, "\n".join(empty)

        # Every template variable offers values; `service` offers all four services.
        for title, variable_query in variable_queries():
            selector, label = parse_label_values(variable_query)
            params = {"match[]": substitute(selector)} if selector else {}
            r = await client.get(f"{prometheus.url}/api/v1/label/{label}/values", params=params)
            values = r.json()["data"]
            assert values, f"{title}: {variable_query} offers nothing"
            if label == "service":
                # one consumer per service: no "analytics-kpi" any more
                assert set(values) == set(SERVICES), f"{title}: {variable_query} -> {values}"
