"""A stack of its own for tests that break things: broker restarts, database restarts, kills."""

from collections.abc import Iterator

import pytest
from eventkit.devstack import Stack

from tests.conftest import running_stack


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("chaos"), {"BROKER_CHECK_INTERVAL_MS": "500"}) as s:
        yield s
