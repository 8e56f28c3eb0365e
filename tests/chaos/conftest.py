"""A stack of its own for tests that break things: broker restarts, database restarts, kills."""

from collections.abc import Iterator

import pytest
from eventkit.devstack import Stack


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("chaos"),
        pg_port=0,
        kafka_port=0,
        service_ports={},
        env={"KAFKA_SESSION_TIMEOUT_MS": "6000", "BROKER_CHECK_INTERVAL_MS": "500"},
    )
    s.start_infra()
    try:
        s.start_services()
        yield s
    finally:
        s.stop()
