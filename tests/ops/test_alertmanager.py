"""The shipped Alertmanager config at work: a real Alertmanager (Debian's prometheus-alertmanager)
sends a page to the pager, a ticket to the ticket queue, and holds a ticket back while a page fires
for the same service.

Only what cannot run here is changed: the placeholder webhook URLs point at a receiver in this
test, the token files are written by the test, and the groups are sent at once, not after 30 s.
"""

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from crmtools.processes import free_port, stop_process

from tests.ops.alerts import ALERTMANAGER_CONFIG, load_yaml


@dataclass
class Webhooks:
    """What the receivers got: (path, Authorization header, alerts' labels) per notification."""

    got: list[tuple[str, str, list[dict[str, str]]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def notifications(self) -> list[tuple[str, str, list[dict[str, str]]]]:
        with self.lock:
            return list(self.got)


@pytest.fixture
def webhooks() -> Iterator[tuple[Webhooks, int]]:
    hooks = Webhooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hooks.lock:
                hooks.got.append(
                    (self.path, self.headers.get("Authorization", ""), [a["labels"] for a in body["alerts"]])
                )
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def runnable_config(tmp_path: Path, webhook_port: int) -> dict[str, Any]:
    """The shipped config with its placeholders filled in, and no wait before a group is sent."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            webhook["url"] = f"http://127.0.0.1:{webhook_port}/{receiver['name']}"
            token = tmp_path / f"{receiver['name']}-token"
            token.write_text(f"{receiver['name']}-secret\n")
            webhook["http_config"]["authorization"]["credentials_file"] = str(token)
    config["route"]["group_wait"] = "0s"
    return config


def test_pages_and_tickets_reach_their_receivers_and_a_page_holds_its_service_tickets(
    alertmanager_bin: str, webhooks: tuple[Webhooks, int], tmp_path: Path
) -> None:
    hooks, webhook_port = webhooks
    config_path = tmp_path / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(runnable_config(tmp_path, webhook_port)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        alertmanager_bin,
        f"--config.file={config_path}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # one instance, no gossip port
    ]
    log_path = tmp_path / "alertmanager.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, process_group=0)
    try:
        wait_until(lambda: _ready(url), 30, lambda: f"alertmanager not ready: {log_path.read_text()}")
        # The page first, and paged: the inhibitor learns of alerts apart from the dispatcher, so
        # a ticket posted in the same request may go out before the page mutes it (seen once in
        # a full run). "While a page fires" means one that has fired.
        page = [{"labels": {"alertname": "CrmServiceDown", "service": "case", "severity": "page"}}]
        r = httpx.post(f"{url}/api/v2/alerts", json=page, timeout=5)
        assert r.status_code == 200, r.text
        wait_until(lambda: bool(hooks.notifications()), 30, lambda: "the page was not sent")
        tickets = [
            {"labels": {"alertname": "CrmOutboxParked", "service": "case", "severity": "ticket"}},
            {"labels": {"alertname": "CrmOutboxParked", "service": "intake", "severity": "ticket"}},
        ]
        r = httpx.post(f"{url}/api/v2/alerts", json=tickets, timeout=5)
        assert r.status_code == 200, r.text

        def delivered() -> bool:
            paths = {path for path, _, _ in hooks.notifications()}
            return {"/pager", "/ticket"} <= paths

        wait_until(delivered, 30, lambda: f"notifications so far: {hooks.notifications()}")
        # The inhibited ticket is known to Alertmanager as suppressed, and never sent.
        suppressed = httpx.get(f"{url}/api/v2/alerts", params={"inhibited": "true", "active": "false"}, timeout=5)
        assert [a["labels"]["service"] for a in suppressed.json()] == ["case"], suppressed.json()
        sent = {(path, auth, labels["alertname"], labels["service"]) for path, auth, batch in hooks.notifications()
                for labels in batch}  # fmt: skip
        assert sent == {
            ("/pager", "Bearer pager-secret", "CrmServiceDown", "case"),
            ("/ticket", "Bearer ticket-secret", "CrmOutboxParked", "intake"),
        }
    finally:
        stop_process(proc, timeout_s=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(why())
        time.sleep(0.1)
