"""`make run`'s terminal lines, made from the services' JSON log lines."""

from pathlib import Path

import orjson
from crmtools.log_tail import LogFollower, readable


def test_a_json_log_line_reads_as_time_service_level_message_and_fields() -> None:
    line = orjson.dumps(
        {
            "ts": "2026-12-07T10:00:01.5+00:00",
            "level": "WARNING",
            "service": "case",
            "logger": "eventkit.consumer",
            "msg": "dead-lettered",
            "event_type": "crm.intake.interaction_recorded.v1",
            "reason": "schema",
            "exc": "Traceback\n  boom",
        }
    ).decode()
    text = readable("case", line)
    first, *rest = text.splitlines()
    fields = "event_type=crm.intake.interaction_recorded.v1 reason=schema"
    assert first.endswith(f"case         WARNING dead-lettered  {fields}")
    assert first[:8].count(":") == 2
    assert rest == ["    Traceback", "      boom"]


def test_other_lines_pass_through_with_the_service_name() -> None:
    assert readable("intake", "Traceback (most recent call last):") == "intake       Traceback (most recent call last):"
    assert readable("intake", '["not", "a", "record"]') == 'intake       ["not", "a", "record"]'


def test_the_follower_prints_only_what_is_appended_after_it_starts(tmp_path: Path) -> None:
    log = tmp_path / "intake.log"
    log.write_text('{"ts": "2026-12-07T10:00:00+00:00", "level": "INFO", "msg": "old run"}\n')
    shown: list[str] = []
    follower = LogFollower({"intake": log, "case": tmp_path / "case.log"}, shown.append)
    with log.open("a") as f:
        f.write('{"ts": "2026-12-07T10:00:02+00:00", "level": "INFO", "msg": "new run"}\n{"ts": "2026-12-07')
    follower.poll()
    assert len(shown) == 1 and shown[0].endswith("new run")
    with log.open("a") as f:
        f.write('T10:00:03+00:00", "level": "INFO", "msg": "split line"}\n')
    follower.poll()
    assert len(shown) == 2 and shown[1].endswith("split line")
