"""Fixtures of the plumbing tests beyond the shared ones in tests/conftest.py."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from crmtools.infra import EmbeddedBroker
from crmtools.processes import free_port


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own, with no topics (started in milliseconds): its bootstrap."""
    broker = EmbeddedBroker(tmp_path / "broker.log", free_port())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
