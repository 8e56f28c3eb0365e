"""The same end-to-end check against real Apache Kafka and PostgreSQL in containers.

Runs wherever a container engine answers (testcontainers); elsewhere it is reported as
skipped with the reason. The development machines have none, so there it always skips.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventkit.devstack import Stack, free_port

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


KAFKA_IMAGE = "apache/kafka:3.9.1"  # the image and KRaft settings of docker-compose.yml


@contextlib.contextmanager
def apache_kafka() -> Iterator[str]:
    """Apache Kafka in KRaft mode (one node, broker and controller), configured as in
    docker-compose.yml but advertising the host port the container is reachable on; yields
    its bootstrap address.

    testcontainers' KafkaContainer drives Confluent's image (its start script lives in
    /etc/confluent), so the official Apache image is started as a plain container.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    host = os.environ.get("TESTCONTAINERS_HOST_OVERRIDE", "localhost")
    port = free_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
    )
    with kafka:  # started here, removed on the way out
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        yield f"{host}:{port}"


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = container_engine_problem()
    if problem:
        pytest.skip(problem)
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:18", username="postgres", password="postgres", dbname="postgres") as pg,
        apache_kafka() as kafka_bootstrap,
    ):
        dsn = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        stack = Stack(
            Path(tmp_path_factory.mktemp("real")),
            service_ports={},
            postgres_dsn=dsn,
            kafka_bootstrap=kafka_bootstrap,
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
