"""What keeps the code readable in an afternoon (CONTRIBUTING.md): small modules, few escapes
from the type checker, every service of the same shape."""

from pathlib import Path

import pytest

from contracts.services import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 500
MAX_TYPE_IGNORES = 5
# Every service has these; CONTRIBUTING.md says what goes in each.
SERVICE_MODULES = ("domain.py", "store.py", "deps.py", "api.py", "settings.py", "main.py")


def _modules() -> list[Path]:
    return sorted(p for top in ("services", "contracts") for p in (ROOT / top).rglob("*.py"))


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_type_checker_escapes_stay_few() -> None:
    ignores = [
        str(p.relative_to(ROOT)) for p in _modules() for line in p.read_text().splitlines() if "type: ignore" in line
    ]
    assert len(ignores) <= MAX_TYPE_IGNORES, ignores


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_service_has_the_same_shape(service: str) -> None:
    missing = [m for m in SERVICE_MODULES if not (ROOT / "services" / service / m).is_file()]
    assert missing == []
