"""The integration suite again, against real Apache Kafka and PostgreSQL in containers.

Wherever a container engine answers (testcontainers), the `infra` and `stack` fixtures below
replace the embedded broker and PostgreSQL for the tests in this folder, which re-run the
plumbing and end-to-end tests unchanged (one test body, two adapters). Elsewhere each is
reported as skipped with the reason; the development machines have no engine, so there they
always skip. The chaos tests that restart the broker or PostgreSQL stay embedded-only.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from crmtools.devstack import Stack
from crmtools.infra import ExternalBroker, ExternalPostgres
from crmtools.processes import free_port

from tests.conftest import running_stack


def container_engine_problem() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        return f"no container engine answers here ({type(exc).__name__}); runs where Docker is available"
    return None


KAFKA_IMAGE = "apache/kafka:4.1.1"  # the image and KRaft settings of docker-compose.yml


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


@pytest.fixture(scope="session")
def containers() -> Iterator[tuple[str, str]]:
    """(PostgreSQL server DSN, Kafka bootstrap) of one PostgreSQL 18 and one Apache Kafka
    container for the whole session; every test here is skipped, with the reason, without an engine."""
    problem = container_engine_problem()
    if problem:
        pytest.skip(problem)
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:18.4", username="postgres", password="postgres", dbname="postgres") as pg,
        apache_kafka() as kafka_bootstrap,
    ):
        yield pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://"), kafka_bootstrap


@pytest.fixture(scope="session")
def infra(containers: tuple[str, str]) -> tuple[ExternalPostgres, ExternalBroker]:
    """Overrides the embedded infra of tests/conftest.py: the `postgres`, `bootstrap`, `pool`
    and `producer` fixtures, and so the plumbing tests re-run here, talk to the containers."""
    dsn, bootstrap = containers
    return ExternalPostgres(dsn), ExternalBroker(bootstrap)


@pytest.fixture(scope="module")
def stack(containers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Overrides tests/e2e's `stack`: the four services as processes on the containers."""
    dsn, bootstrap = containers
    directory = Path(tmp_path_factory.mktemp("real"))
    with running_stack(directory, {"LOG_LEVEL": "INFO"}, postgres_dsn=dsn, kafka_bootstrap=bootstrap) as stack:
        yield stack
