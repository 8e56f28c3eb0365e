"""bench/rows.py turns each scenario's answer into its rows (pure, no stack)."""

from typing import Any

import pytest

from bench import rows
from bench.run import ALIASES, SCENARIOS, main

CPU = {"cpu_s": {"postgres": 0.5, "intake": 0.25}, "cpu_window_s": 10.0}


def fresh(rate: float, p50: float, p99: float) -> dict[str, Any]:
    return {"rate": rate, "p50_ms": p50, "p99_ms": p99, "sent": 1000, "samples": 90, "missed": 0, "warmup_s": 2,
            "skipped_over_128_in_flight": 0, "idle": True, "idle_wait_s": 1.0, **CPU}  # fmt: skip


def test_freshness_has_a_row_per_pace_the_targets_on_250() -> None:
    report = rows.fresh_report({250: fresh(249.0, 20.0, 90.0), 500: fresh(498.0, 40.0, 200.0)})
    assert [(r.name, r.value, r.target) for r in report.rows] == [
        ("freshness p50 (250 events/s)", "20.0 ms", "≤ 50 ms"),
        ("freshness p99 (250 events/s)", "90.0 ms", "≤ 150 ms"),
        ("freshness p50 (500 events/s)", "40.0 ms", ""),
        ("freshness p99 (500 events/s)", "200.0 ms", ""),
    ]
    assert [c.scenario for c in report.costs] == [
        "single POST paced at 250/s (freshness)",
        "single POST paced at 500/s (freshness)",
    ]
    assert set(report.notes) == {"fresh 250/s", "fresh 500/s"}
    assert all(name in rows.ROWS for name in (r.name for r in report.rows))


def test_a_scenario_alone_leaves_the_raw_limit_columns_empty() -> None:
    b = {"rate": 900.0, "lag_s": 1.5, "accepted": 9000, "elapsed_s": 10.0, "errors": 0, **CPU}
    report = rows.batch_report(b)
    assert [(r.name, r.value, r.limit, r.ratio) for r in report.rows] == [
        ("intake batch throughput", "900 events/s", "", ""),
        ("intake batch timeline lag", "1.50 s", "", ""),
    ]
    assert report.costs[0].per_unit_us() == 0.75 / 9000 * 1e6


def test_every_scenario_can_run_alone() -> None:
    assert set(SCENARIOS) == {"batch", "single", "freshness", "read", "campaign", "rebuild"}
    assert ALIASES == {"fresh": "freshness"}


def test_an_unknown_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--only", "nonsense"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
