"""bench/campaign.py turns one scenario's answer into its rows and note (pure, no stack)."""

import re
from typing import Any

from bench import campaign

FRESH = {"rate": 99.6, "p50_ms": 12.34, "p99_ms": 80.06, "sent": 2000, "samples": 180, "missed": 0}


def result(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "customers": 10_000,
        "region": "ZZ-AB1",
        "customers_s": 4.0,
        "region_and_consent_s": 50.0,
        "campaign_id": "bench-x",
        "audience_size": 10_000,
        "counts": {"scheduled": 9_000, "sent": 1_000, "suppressed": {"no_consent": 3, "cap": 2}},
        "created_at": "2026-12-07T18:00:00.000000+00:00",
        "completed_at": "2026-12-07T18:00:12.500000+00:00",
        "sending_after_s": 0.4,
        "campaign_rate_per_s": 5000.0,
        "fresh": FRESH,
    }
    return {**r, **over}


def test_decisions_per_second_is_the_audience_over_creation_to_completed() -> None:
    assert campaign.send_seconds(result()) == 12.5
    assert campaign.decisions_per_s(result()) == 800.0


def test_rows_name_the_size_and_the_probe_rate() -> None:
    assert campaign.rows(result()) == [
        ("campaign send (10,000 customers)", "800 decisions/s"),
        ("freshness during campaign p50 (100 interactions/s)", "12.3 ms"),
        ("freshness during campaign p99 (100 interactions/s)", "80.1 ms"),
    ]
    assert campaign.rows(result(customers=1_000, audience_size=1_000))[0] == (
        "campaign send (1,000 customers)",
        "80 decisions/s",
    )


def test_note_says_how_the_figure_was_made() -> None:
    text = campaign.note(result())
    assert "10,000 targets decided in 12.5 s" in text
    assert "5 suppressed" in text and "CAMPAIGN_RATE_PER_S 5,000" in text
    assert "first seen sending after 0.4 s" in text
    assert "first seen sending after n/a" in campaign.note(result(sending_after_s=None))


def test_the_region_matches_intakes_pattern() -> None:
    regions = {campaign.fresh_region() for _ in range(50)}
    assert all(re.fullmatch(r"[A-Z]{2}(-[A-Z0-9]{1,3})?", r) for r in regions)
    assert len(regions) > 1
