"""schemathesis against each service's OpenAPI, with a valid key: hundreds of generated requests
per service, no 5xx, and no response whose status, content type or body the document does not
describe (status_code_conformance, content_type_conformance, response_schema_conformance).

Random ids find nothing (404), so the documented 200 bodies would never be checked: the stack is
seeded with a customer who has a case, notifications and insights, and the generated path, query
and body ids are often theirs (schemathesis dictionaries).
"""

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from crmtools.devstack import Stack

from tests.conftest import ADMIN_KEY, auth_headers, running_stack

pytestmark = pytest.mark.e2e
MIN_CASES = 500
MIN_HOSTILE_CASES = 50
ROOT = Path(__file__).parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the generated requests leave plenty of odd data behind."""
    with running_stack(tmp_path_factory.mktemp("fuzz"), {}) as s:
        yield s


def _poll(probe: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while (found := probe()) is None or found == []:
        assert time.monotonic() < deadline, f"seeding: not within {timeout_s} s: {what}"
        time.sleep(0.2)
    return found


@pytest.fixture(scope="module")
def known_ids(fuzz_stack: Stack) -> dict[str, list[str]]:
    """Ids that exist in every service: a customer with a name, a complaint (which opens a case and
    notifies the customer), that case, its notifications, and an API key. dictionary -> values."""
    url = {name: svc.url for name, svc in fuzz_stack.services.items()}
    with httpx.Client(headers=auth_headers(), timeout=30) as client:
        complaint = {
            "customer": {"email": "fuzz.seed@example.com", "phone": "+442071838750"},
            "channel": "email",
            "direction": "inbound",
            "kind": "complaint",
            "occurred_at": datetime.now(UTC).isoformat(),
            "content": "the seeded complaint",
        }
        r = client.post(f"{url['intake']}/v1/interactions", json=complaint)
        assert r.status_code == 202, r.text
        accepted = r.json()
        customer_id, event_id = accepted["customer_id"], accepted["event_id"]
        r = client.put(f"{url['intake']}/v1/customers/{customer_id}/profile", json={"name": "Fuzz Seed"})
        assert r.status_code == 200, r.text
        for service in ("case", "notification", "analytics"):
            r = client.get(
                f"{url[service]}/v1/customers/{customer_id}/timeline",
                params={"wait_for": event_id, "timeout_ms": 30_000},
            )
            assert r.status_code == 200, f"{service}: {r.status_code} {r.text}"
        cases = _poll(
            lambda: client.get(f"{url['case']}/v1/cases", params={"customer_id": customer_id}).json()["cases"],
            "the complaint's case",
        )
        notifications = _poll(
            lambda: client.get(f"{url['notification']}/v1/notifications", params={"customer_id": customer_id}).json()[
                "items"
            ],
            "the case's notification",
        )
        _poll(
            lambda: client.get(f"{url['analytics']}/v1/customers/{customer_id}/insights").status_code == 200 or None,
            "the customer's insights",
        )
        r = client.post(f"{url['intake']}/v1/admin/keys", json={"name": "fuzz", "scopes": ["agent"]})
        assert r.status_code == 201, r.text
        key_id = r.json()["key_id"]
    return {
        "customers": [customer_id],
        "cases": [c["case_id"] for c in cases],
        "notifications": [n["notification_id"] for n in notifications],
        "events": [event_id],
        "keys": [key_id],
    }


# Where the known ids go, and how often (the rest stay generated: unknown ids must answer 404).
BINDINGS = {
    "path.customer_id": ("customers", 0.7),
    "query.customer_id": ("customers", 0.5),
    "path.case_id": ("cases", 0.7),
    "path.notification_id": ("notifications", 0.7),
    "path.key_id": ("keys", 0.5),
    "query.key_id": ("keys", 0.5),
    "query.wait_for": ("events", 0.3),
    "body.interaction_event_id": ("events", 0.7),
    "body.customer_id": ("customers", 0.7),
}


# Operations whose generated requests must also succeed at least once (their documented examples
# do), so that the success answer's status and body are checked too, not only the refusals.
MUST_SUCCEED = {"intake": ["POST /v1/interactions", "POST /v1/interactions:batch"]}


def statuses(report: Path) -> dict[str, Counter[int]]:
    """The response statuses per operation ("POST /v1/interactions"), from the ndjson report."""
    seen: dict[str, Counter[int]] = {}
    for line in report.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if event is None:
            continue
        recorder = event["recorder"]
        for interaction in recorder.get("interactions", {}).values():
            if interaction.get("response"):
                seen.setdefault(recorder["label"], Counter())[interaction["response"]["status_code"]] += 1
    return seen


def _config_with(ids: dict[str, list[str]], directory: Path) -> Path:
    """schemathesis.toml plus the known ids as dictionaries bound to those parameters."""
    lines = [CONFIG.read_text(), ""]
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", "values = [" + ", ".join(f'"{v}"' for v in values) + "]", ""]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = {p} }}' for key, (name, p) in BINDINGS.items()]
    path = directory / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_schemathesis(
    url: str, config: Path, workdir: Path, options: list[str], min_cases: int, hooks: str = ""
) -> None:
    """schemathesis against one service's OpenAPI, as the admin; it must pass and generate at
    least `min_cases` test cases. `hooks`: a module of schemathesis hooks, importable from ROOT."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
            "run", f"{url}/openapi.json",
            "--header", f"Authorization: Bearer {ADMIN_KEY}",
            "--exclude-path-regex", r".*/stream$",  # an endless event stream: nothing to conform to
            "--workers", "1",
            "--max-failures", "20",
            *options,
        ],
        capture_output=True, text=True, timeout=900, cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "SCHEMATHESIS_HOOKS": hooks,
             **({"PYTHONPATH": str(ROOT)} if hooks else {})},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    cases = re.search(r"Test cases:\s+(\d+) generated", output)
    assert cases is not None, output[-3000:]
    assert int(cases.group(1)) >= min_cases, output[-3000:]


@pytest.mark.parametrize("service", ["intake", "case", "notification", "analytics"])
def test_generated_requests_never_break_a_service(
    fuzz_stack: Stack, known_ids: dict[str, list[str]], service: str, tmp_path: Path
) -> None:
    options = [
        # Every answer must be documented: its status, its content type and its body's schema.
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples", "150",
        "--phases", "examples,coverage,fuzzing",
        "--seed", "20261122",
        "--report", "ndjson", "--report-ndjson-path", str(tmp_path / "events.ndjson"),
    ]  # fmt: skip
    url = fuzz_stack.services[service].url
    run_schemathesis(url, _config_with(known_ids, tmp_path), tmp_path, options, MIN_CASES)
    seen = statuses(tmp_path / "events.ndjson")
    for operation in MUST_SUCCEED.get(service, []):
        assert any(200 <= status < 300 for status in seen.get(operation, {})), (operation, seen.get(operation))


@pytest.mark.parametrize("service", ["intake", "case", "notification", "analytics"])
def test_hostile_values_never_break_a_service(
    fuzz_stack: Stack, known_ids: dict[str, list[str]], service: str, tmp_path: Path
) -> None:
    """The same generated requests with one hostile value each (tests/e2e/hostile_hooks.py): lone
    surrogates, NUL and control characters, non-ASCII and overlong digits, numbers for text and
    dates, JSON nested hundreds deep. Every answer a 4xx or success: no 5xx, no dropped connection."""
    options = [
        "--checks", "not_a_server_error",
        "--max-examples", "40",
        "--phases", "fuzzing",
        "--mode", "positive",  # valid requests, so the one hostile value is what is tested
        "--seed", "20261207",
    ]  # fmt: skip
    url = fuzz_stack.services[service].url
    run_schemathesis(
        url, _config_with(known_ids, tmp_path), tmp_path, options, MIN_HOSTILE_CASES, "tests.e2e.hostile_hooks"
    )
