"""Operations tests: a real Prometheus server (and its promtool, and Alertmanager's amtool) and an
in-test OTLP/HTTP trace receiver.

One embedded stack serves the whole ops session: the four services as real processes, each
exporting its spans by OTLP/HTTP to a receiver in this test process (so the trace test can
see spans from four processes), and scraped by Prometheus in the dashboard test.
"""

import shutil
from collections.abc import Iterator

import pytest
from crmtools.devstack import Stack

from tests import debian
from tests.conftest import running_stack
from tests.ops.otlp import OtlpReceiver, start_receiver

# --- Prometheus and Alertmanager binaries --------------------------------------------------


def debian_tool(binary: str, package: str, hint: str) -> str:
    """`binary` on PATH, installed from Debian's `package` if need be; skips the test if neither."""
    found = shutil.which(binary)
    if found is None:
        why = debian.apt_install(package)
        found = shutil.which(binary)
        if found is None:
            pytest.skip(f"no {binary} on PATH and it cannot be installed here: {why or 'not on PATH'} ({hint})")
    return found


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Debian's prometheus package: 2.42 on bookworm, with promtool."""
    return debian_tool("prometheus", "prometheus", "or put a Prometheus 2.x binary on PATH")


@pytest.fixture(scope="session")
def amtool_bin() -> str:
    """Debian's prometheus-alertmanager package: amtool 0.25 on bookworm."""
    return debian_tool("amtool", "prometheus-alertmanager", "or put amtool on PATH")


@pytest.fixture(scope="session")
def alertmanager_bin(amtool_bin: str) -> str:
    """The Alertmanager of amtool's package (Debian names it prometheus-alertmanager)."""
    found = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if found is None:
        pytest.skip(f"amtool at {amtool_bin} but no alertmanager or prometheus-alertmanager on PATH")
    return found


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver, thread = start_receiver()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)


# --- the stack -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ops_stack(tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver) -> Iterator[Stack]:
    env = {
        "LOG_LEVEL": "INFO",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export spans within ~0.1 s, not 5 s
        "KPI_GAUGE_INTERVAL_MS": "500",  # the KPI dashboard's gauges follow the traffic quickly
        # the settled timeline counts follow quickly too (test_timeline_count.py)
        "TIMELINE_COUNT_INTERVAL_S": "1",
        "TIMELINE_SETTLED_AFTER_S": "3",
    }
    with running_stack(tmp_path_factory.mktemp("ops-stack"), env) as s:
        yield s
