"""`python -m bench.run --quick` runs end to end and reports every figure (no timing asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.rows import CPU_HEADING, ROWS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_quick_bench_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = out.read_text()
    for row in ROWS:
        assert f"| {row} |" in done.stdout, row
        assert f"| {row} |" in written, row
    assert CPU_HEADING in written
    # the campaign rows name their size: --quick sends to 200 customers
    for row in ("campaign send (200 customers)", "freshness during campaign p50", "freshness during campaign p99"):
        assert f"| {row}" in written, row
    assert "- campaign: 200 customers" in written
    lines = written.splitlines()
    for scenario in ("intake batch", "single POST at 32 clients", "single POST paced at 250/s (freshness)",
                     "single POST paced at 500/s (freshness)", "timeline read at 200/s"):  # fmt: skip
        line = next(line for line in lines if line.startswith(f"| {scenario} |"))
        assert "postgres" in line and "broker" in line and "load generator" in line, line
        assert all(f"{name} " in line for name in ("intake", "case", "notification", "analytics")), line
    rebuild = next(line for line in lines if line.startswith("| rebuild (crm replay) |"))
    assert "crm replay" in rebuild.split("|")[3] and "postgres" in rebuild, rebuild
    for fact in ("cores:", "memory:", "Python:", "date:", "1-min load average:", "Python speed:"):
        assert fact in written, fact
