"""A stack of its own for tests that break things: broker restarts, database restarts, kills.

Each test fills in its Figures; they are printed together at the end of the run (pytest shows
nothing a passing test prints), so `make test` shows what each fault cost.
"""

from collections.abc import Iterator

import pytest
from crmtools.devstack import Stack

from tests.chaos.load import Figures
from tests.conftest import running_stack, smtp_env
from tests.notification.receivers import SmtpServer

COLLECTED: list[Figures] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Stack]:
    # A real SMTP server, so notification's sends (and any repeat of one) can be counted. The load's
    # customers keep writing after their case is resolved: with no reopen window those messages
    # leave the case resolved, so each agent command's effect can be counted exactly (reopening is
    # tested in tests/e2e/test_agents_day_replies.py).
    env = {"BROKER_CHECK_INTERVAL_MS": "500", "CASE_REOPEN_WINDOW_S": "0", **smtp_env(smtp)}
    with running_stack(tmp_path_factory.mktemp("chaos"), env) as s:
        yield s


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    collected = Figures(request.node.name)
    COLLECTED.append(collected)
    yield collected


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COLLECTED:
        terminalreporter.section("chaos figures (SPEC §12)")
        for f in COLLECTED:
            terminalreporter.write_line(f.line())
