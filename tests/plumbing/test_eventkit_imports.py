"""eventkit is the event-sourcing library only: none of its modules imports the contracts, the
service skeleton, the tools or a service. What it must know of them (event types, topics, the
Kafka client options) is passed in by the caller."""

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
EVENTKIT = SERVICES / "eventkit"
# Every package beside eventkit (servicekit, crmtools, the four services, ...) and contracts.
FORBIDDEN = {"contracts", *(p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists())} - {"eventkit"}
MODULES = sorted(EVENTKIT.rglob("*.py"))


def imported_packages(source: str) -> set[str]:
    """The top-level package of every import in this source, wherever it is (a function's too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_forbidden_packages_are_the_ones_beside_eventkit() -> None:
    assert {"contracts", "servicekit", "crmtools", "intake", "case", "notification", "analytics"} <= FORBIDDEN


def test_the_check_sees_an_import_in_a_function() -> None:
    assert imported_packages("def f():\n    from contracts.topics import DEADLETTER\n") == {"contracts"}


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(EVENTKIT)))
def test_eventkit_imports_no_contract_skeleton_tool_or_service(module: Path) -> None:
    wrong = imported_packages(module.read_text()) & FORBIDDEN
    assert not wrong, f"eventkit/{module.relative_to(EVENTKIT)} imports {', '.join(sorted(wrong))}"
