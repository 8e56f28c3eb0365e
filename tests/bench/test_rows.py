"""bench/rows.py turns each scenario's answer into its rows (pure, no stack)."""

from typing import Any

import pytest

from bench import rows, scaleout
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
    assert set(SCENARIOS) == {"batch", "single", "freshness", "read", "campaign", "rebuild", "scale-out"}
    assert ALIASES == {"fresh": "freshness"}


def test_an_unknown_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--only", "nonsense"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_the_partitions_an_instance_reads_come_from_its_lag_gauges() -> None:
    metrics = "\n".join([
        "# TYPE crm_consumer_lag gauge",
        'crm_consumer_lag{partition="0",service="analytics",topic="crm.intake.v1"} 0.0',
        'crm_consumer_lag{partition="3",service="analytics-kpi",topic="crm.case.v1"} 12.0',
        'crm_consumer_lag{partition="4",service="analytics",topic="crm.intake.v1"} 0.0',
        'crm_outbox_backlog{service="analytics"} 0.0',
    ])  # fmt: skip
    assert scaleout.partitions_in(metrics) == {
        "analytics": {("crm.intake.v1", "0"), ("crm.intake.v1", "4")},
        "analytics-kpi": {("crm.case.v1", "3")},
    }


def batch_result(accepted: int, caught_up_s: float | None) -> dict[str, Any]:
    return {"accepted": accepted, "caught_up_s": caught_up_s, **CPU}


def test_scale_out_rows_give_the_rate_to_all_caught_up_and_report_problems() -> None:
    checks = scaleout.Checks(split={"case": (12, 12, 0)}, digests=(39, 40), kpi=(9_000, 10_000),
                             problems=["digests differ between services for 1 of 40 customers"])  # fmt: skip
    report = rows.scaleout_report(batch_result(10_000, 5.0), batch_result(10_000, 4.0), checks)
    assert [(r.name, r.value, r.ratio) for r in report.rows] == [
        ("batch to all caught up, 1 instance of case and analytics", "2,000 events/s, 75 µs CPU per event", ""),
        ("batch to all caught up, 2 instances of case and analytics", "2,500 events/s, 75 µs CPU per event",
         "1.25 of 1 instance"),
    ]  # fmt: skip
    note = report.notes["scale-out"]
    assert "case 12+12 partitions (0 on both)" in note and "39 of 40 sampled customers" in note
    assert "counted 9,000 of 10,000" in note and "PROBLEMS: digests differ" in note
    assert rows.scaleout_report(batch_result(10, None), batch_result(10, None), scaleout.Checks()).rows[0].value == (
        "n/a, 75,000 µs CPU per event"
    )
