"""The same end-to-end check against real Apache Kafka and PostgreSQL in containers.

Runs wherever a container engine answers (testcontainers); elsewhere it is reported as
skipped with the reason. The development machines have none, so there it always skips.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from eventkit.devstack import Stack

from tests.e2e.conftest import Accepted, post_all, wait_converged
from tests.e2e.test_timeline_sync import assert_exact, workload

pytestmark = pytest.mark.e2e


def container_engine_problem() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        return f"no container engine answers here ({type(exc).__name__}); runs where Docker is available"
    return None


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = container_engine_problem()
    if problem:
        pytest.skip(problem)
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:18", username="postgres", password="postgres", dbname="postgres") as pg,
        KafkaContainer("confluentinc/cp-kafka:7.8.0").with_kraft() as kafka,
    ):
        dsn = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        stack = Stack(
            Path(tmp_path_factory.mktemp("real")),
            service_ports={},
            postgres_dsn=dsn,
            kafka_bootstrap=kafka.get_bootstrap_server(),
            env={"KAFKA_SESSION_TIMEOUT_MS": "6000"},
        )
        stack.start_infra()
        try:
            stack.start_services()
            yield stack
        finally:
            stack.stop()


async def test_timelines_agree_on_apache_kafka(real_stack: Stack) -> None:
    accepted = Accepted()
    await post_all(real_stack.services["intake"].url, workload("real", 20, 400, seed=31), accepted)
    await wait_converged(real_stack, accepted)
    await assert_exact(real_stack, accepted)
