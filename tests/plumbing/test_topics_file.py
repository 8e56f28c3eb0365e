"""infra/topics.yaml, the one definition of the topics: its names are contracts' topics, event
topics are kept forever, and the services, their relay and `crm topics apply` read it (with the
KAFKA_* overrides). Also the plan of `crm topics apply` for states the embedded broker cannot
produce (more partitions than the file, configs that differ)."""

from pathlib import Path

import pytest
import yaml
from crmtools.topics import Observed, plan
from eventkit.topics import TopicSpec
from servicekit.app import StartupRefused, refuse_bad_settings
from servicekit.settings import DEFAULT_TOPICS_FILE, Settings
from servicekit.topic_plan import TopicsFileError, load, planned_topics, service_topics

from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

ROOT = Path(__file__).resolve().parents[2]
THIRTY_DAYS_MS = str(30 * 24 * 3600 * 1000)


def test_the_file_defines_exactly_the_topics_of_the_contracts() -> None:
    assert DEFAULT_TOPICS_FILE == ROOT / "infra" / "topics.yaml"
    names = [s.name for s in load(DEFAULT_TOPICS_FILE)]
    assert sorted(names) == sorted([*ALL_EVENT_TOPICS, DEADLETTER])


def test_event_topics_are_kept_forever_and_dead_letters_for_thirty_days() -> None:
    specs = {s.name: s for s in load(DEFAULT_TOPICS_FILE)}
    for name in ALL_EVENT_TOPICS:
        assert specs[name].config["retention.ms"] == "-1", name
        assert specs[name].config["cleanup.policy"] == "delete", name
    assert specs[DEADLETTER].config["retention.ms"] == THIRTY_DAYS_MS
    for spec in specs.values():
        assert (spec.replication_factor, spec.config["min.insync.replicas"]) == (3, "2"), spec.name


def test_services_make_their_topics_as_the_file_says_with_the_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_TOPIC_PARTITIONS", "KAFKA_REPLICATION_FACTOR", "TOPICS_FILE"):
        monkeypatch.delenv(name, raising=False)
    made = service_topics(Settings())
    assert [s.name for s in made] == [*ALL_EVENT_TOPICS, DEADLETTER]
    assert made == [{s.name: s for s in load(DEFAULT_TOPICS_FILE)}[s.name] for s in made]

    # one broker (`make run`): one replica, and no more of them demanded in sync than exist
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "1")
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "3")
    for spec in service_topics(Settings()):
        assert (spec.partitions, spec.replication_factor, spec.config["min.insync.replicas"]) == (3, 1, "1")
        assert spec.config["retention.ms"] in ("-1", THIRTY_DAYS_MS)


def write(tmp_path: Path, topics: object) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump({"topics": topics}))
    return path


def test_a_file_without_a_topic_of_the_contracts_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, [{"name": DEADLETTER, "partitions": 1, "replication_factor": 1}])
    with pytest.raises(TopicsFileError, match=r"does not define crm\.intake\.v1, crm\.case\.v1"):
        service_topics(Settings(topics_file=str(path)))


@pytest.mark.parametrize(
    ("topics", "reason"),
    [
        ([], "no list under `topics`"),
        ([{"partitions": 1}], r"topics\[0\]: needs a name"),
        ([{"name": "a", "partitions": 0, "replication_factor": 1}], "a: partitions must be a whole number"),
        ([{"name": "a", "partitions": 1, "replication_factor": "3"}], "a: replication_factor must be a whole"),
        ([{"name": "a", "partitions": 1, "replication_factor": 1, "config": [1]}], "a: config must be a mapping"),
        ([{"name": "a", "partitions": 1, "replication_factor": 1}] * 2, "a topic is defined twice"),
    ],
)
def test_a_wrong_file_is_refused_with_the_reason(tmp_path: Path, topics: object, reason: str) -> None:
    with pytest.raises(TopicsFileError, match=reason):
        planned_topics(Settings(topics_file=str(write(tmp_path, topics))))


def test_a_missing_or_wrong_file_keeps_a_service_from_starting(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(StartupRefused, match=f"TOPICS_FILE {missing}: .*No such file"):
        refuse_bad_settings(Settings(topics_file=str(missing)))
    wrong = write(tmp_path, [{"name": DEADLETTER, "partitions": 1, "replication_factor": 1}])
    with pytest.raises(StartupRefused, match=f"TOPICS_FILE {wrong} does not define crm.intake.v1"):
        refuse_bad_settings(Settings(topics_file=str(wrong)))
    refuse_bad_settings(Settings())  # the shipped file: nothing to refuse


def test_config_values_reach_kafka_as_its_strings(tmp_path: Path) -> None:
    path = write(tmp_path, [{"name": "a", "partitions": 1, "replication_factor": 1,
                             "config": {"retention.ms": -1, "unclean.leader.election.enable": False}}])  # fmt: skip
    assert load(path)[0].config == {"retention.ms": "-1", "unclean.leader.election.enable": "false"}


SPEC = TopicSpec("crm.x.v1", 6, 3, {"retention.ms": "-1", "min.insync.replicas": "2"})


def lines(observed: dict[str, Observed]) -> list[str]:
    return [a.line for a in plan([SPEC], observed)]


def test_the_plan_never_shrinks_and_leaves_unknown_topics_alone() -> None:
    configs = {"retention.ms": "-1", "min.insync.replicas": "2", "segment.ms": "1"}
    observed = {"crm.x.v1": Observed(8, 3, configs), "crm.old.v1": Observed(1, 3, {}), "other": Observed(1, 1, {})}
    assert lines(observed) == [
        "cannot-shrink crm.x.v1 has 8 partitions, the file 6 (left as it is)",
        "extra crm.old.v1 (not in the topics file; left as it is)",
    ]


def test_the_plan_alters_only_the_configs_that_differ() -> None:
    observed = {"crm.x.v1": Observed(6, 3, {"retention.ms": "604800000", "min.insync.replicas": "2"})}
    assert lines(observed) == ["alter-config crm.x.v1 retention.ms=604800000->-1"]
    observed = {"crm.x.v1": Observed(4, 3, {"retention.ms": "-1"})}
    assert lines(observed) == ["add-partitions crm.x.v1 4 -> 6", "alter-config crm.x.v1 min.insync.replicas=(unset)->2"]


def test_the_plan_says_what_it_cannot_know_or_change() -> None:
    assert lines({"crm.x.v1": Observed(6, 1, None)}) == [
        "replication-differs crm.x.v1 has 1 replicas, the file 3"
        " (not changed: reassign partitions with Kafka's own tools)",
        "configs-unknown crm.x.v1 (broker returned no configs)",
    ]
    assert lines({"crm.x.v1": Observed(6, 3, {"retention.ms": "-1", "min.insync.replicas": "2"})}) == [
        "ok crm.x.v1 partitions=6 rf=3 retention.ms=-1 min.insync.replicas=2"
    ]
    assert lines({}) == ["create crm.x.v1 partitions=6 rf=3 retention.ms=-1 min.insync.replicas=2"]
