"""schemathesis against each service's OpenAPI, with a valid key: hundreds of generated requests
per service, no 5xx, and no response that breaks the documented schema."""

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventkit.devstack import Stack

from tests.conftest import ADMIN_KEY, running_stack

pytestmark = pytest.mark.e2e
MIN_CASES = 500
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the generated requests leave plenty of odd data behind."""
    with running_stack(tmp_path_factory.mktemp("fuzz"), {}) as s:
        yield s


@pytest.mark.parametrize("service", ["intake", "case", "notification", "analytics"])
def test_generated_requests_never_break_a_service(fuzz_stack: Stack, service: str, tmp_path: Path) -> None:
    svc = fuzz_stack.services[service]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG),
            "run", f"{svc.url}/openapi.json",
            "--header", f"Authorization: Bearer {ADMIN_KEY}",
            # Every answer must be documented: its status, its content type and its body's schema.
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples", "150",
            "--phases", "examples,coverage,fuzzing",
            "--exclude-path-regex", r".*/stream$",  # an endless event stream: nothing to conform to
            "--seed", "20261122",
            "--workers", "1",
            "--max-failures", "20",
            "--report", "ndjson", "--report-ndjson-path", str(tmp_path / "events.ndjson"),
        ],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    cases = re.search(r"Test cases:\s+(\d+) generated", output)
    assert cases is not None, output[-3000:]
    assert int(cases.group(1)) >= MIN_CASES, output[-3000:]
