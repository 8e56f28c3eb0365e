"""The production-shaped files, checked without a container engine: every service in compose
and Kubernetes has its own database, probes and the settings the code reads."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from servicekit.settings import DEFAULT_PORTS, Settings

from contracts import topics
from contracts.topics import ALL_EVENT_TOPICS, DEADLETTER

ROOT = Path(__file__).resolve().parents[2]
SERVICES = list(DEFAULT_PORTS)
OWN_TOPIC = {
    "intake": topics.INTAKE,
    "case": topics.CASE,
    "notification": topics.NOTIFICATION,
    "analytics": topics.ANALYTICS,
}


def test_compose_runs_each_service_on_its_own_database() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for required in ("kafka", "postgres", "otel-collector", "prometheus", "grafana", "jaeger"):
        assert required in services
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == ["python", "-m", f"{name}.main"]
        env = {**svc["environment"]}
        assert env["DATABASE_URL"].endswith(f"/crm_{name}")
        assert env["HTTP_PORT"] == str(DEFAULT_PORTS[name])
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    settings_names = {name.upper() for name in Settings.model_fields}
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "HTTP_PORT", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= settings_names


def test_kubernetes_manifests_have_probes_resources_and_own_databases() -> None:
    k8s = ROOT / "deploy/k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (k8s / resource).exists()
    for name in SERVICES:
        docs = {d["kind"]: d for d in yaml.safe_load_all((k8s / f"{name}.yaml").read_text())}
        container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"{name}.main"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"]["cpu"]
        db_ref = next(e for e in container["env"] if e["name"] == "DATABASE_URL")
        assert db_ref["valueFrom"]["secretKeyRef"]["key"] == name
        assert docs["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] <= 6  # no more consumers than partitions


def test_compose_file_is_valid_for_docker_compose() -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker client not installed")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed here")
    result = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- security of the deployments (docs/product.md §14) -------------------------------------------------------

SECRET_SETTINGS = ("PASSWORD", "SECRET", "_KEY", "DATABASE_URL", "AUTH_EVENT_PUBLIC_KEYS")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_is_valid_against_the_compose_specification() -> None:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool, "check-jsonschema (requirements-dev.txt) is not installed"
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_kafka_authenticates_with_scram_and_authorizes_with_acls() -> None:
    kafka = _compose()["services"]["kafka"]
    script = (ROOT / "deploy/kafka/server.sh").read_text()
    assert kafka["entrypoint"] == ["/bin/sh", "/deploy/kafka/server.sh"]
    assert "./deploy/kafka/server.sh:/deploy/kafka/server.sh:ro" in kafka["volumes"]
    properties = dict(
        line.split("=", 1) for line in script.split("<<PROPERTIES\n")[1].split("\nPROPERTIES")[0].splitlines()
    )
    # clients reach only the SASL listener; the PLAINTEXT controller listener is on loopback
    assert properties["listeners"] == "SASL_PLAINTEXT://:9092,CONTROLLER://localhost:9093"
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert "--add-scram" in script


def test_compose_services_use_their_own_kafka_and_database_users_and_no_default_secrets() -> None:
    services = _compose()["services"]
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["CRM_ENV"] == "production"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_USERNAME"] == f"crm-{name}"
        assert env["KAFKA_SASL_PASSWORD"].startswith(f"${{CRM_{name.upper()}_KAFKA_PASSWORD:?")
        assert env["DATABASE_URL"].startswith(f"postgresql://crm_{name}:${{CRM_{name.upper()}_DB_PASSWORD:?")
        assert services[name]["depends_on"]["kafka-setup"] == {"condition": "service_completed_successfully"}
    assert services["notification"]["environment"]["WEBHOOK_SECRET"].startswith("${CRM_WEBHOOK_SECRET:?")
    assert services["intake"]["environment"]["AUTH_EVENT_SIGNING_KEY"].startswith("${CRM_AUTH_EVENT_SIGNING_KEY:?")
    # every secret comes from the environment of `docker compose up`, without a default
    for svc_name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if any(marker in key for marker in SECRET_SETTINGS) and key != "KEY_SERVICE_API_KEY":
                assert "${" in str(value) and ":?" in str(value), f"{svc_name}: {key} is written in the file"


def _fake_tools(tmp_path: Path, names: list[str]) -> tuple[Path, Path]:
    """Stand-ins for the Kafka or PostgreSQL tools that log their arguments (and stdin) instead."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in names:
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n[ -t 0 ] || cat >> {log}\n')
        tool.chmod(0o755)
    return bin_dir, log


def test_kafka_acls_let_each_service_write_only_its_own_topic_and_the_dead_letters(tmp_path: Path) -> None:
    bin_dir, log = _fake_tools(tmp_path, ["kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"])
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BIN": str(bin_dir),
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "KAFKA_ADMIN_PASSWORD": "adminpw",
        **{f"CRM_{name.upper()}_KAFKA_PASSWORD": f"pw{name}" for name in SERVICES},
    }
    result = subprocess.run(
        ["sh", str(ROOT / "deploy/k8s/kafka-acls.sh")],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    calls = [line.split() for line in log.read_text().splitlines() if line.startswith("kafka-")]
    created = {c[c.index("--topic") + 1] for c in calls if c[0] == "kafka-topics.sh"}
    assert created == {*ALL_EVENT_TOPICS, DEADLETTER}
    for name in SERVICES:
        user = f"User:crm-{name}"
        grants = [c for c in calls if c[0] == "kafka-acls.sh" and user in c]
        written = {c[c.index("--topic") + 1] for c in grants if "Write" in c}
        assert written == {OWN_TOPIC[name], DEADLETTER}
        assert all("--resource-pattern-type" not in c for c in grants if "Write" in c)  # literal names only
        reads = [c for c in grants if "Read" in c]
        assert {(c[-2], c[-1]) for c in reads} == {("--topic", "crm."), ("--group", f"crm-{name}")}
        scram = [c for c in calls if c[0] == "kafka-configs.sh" and f"crm-{name}" in c]
        assert scram and f"SCRAM-SHA-512=[password=pw{name}]" in scram[0]
    # nobody else gets any grant
    granted = {c[c.index("--allow-principal") + 1] for c in calls if c[0] == "kafka-acls.sh"}
    assert granted == {f"User:crm-{name}" for name in SERVICES}


def test_postgres_makes_one_user_and_database_per_service(tmp_path: Path) -> None:
    bin_dir, log = _fake_tools(tmp_path, ["psql"])
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "POSTGRES_USER": "postgres",
        **{f"CRM_{name.upper()}_DB_PASSWORD": f"db{name}" for name in SERVICES},
    }
    result = subprocess.run(["sh", str(ROOT / "deploy/postgres/init.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    for name in SERVICES:
        assert f"-v user=crm_{name} -v password=db{name}" in text
    assert text.count('CREATE DATABASE :"user" OWNER :"user";') == len(SERVICES)
    missing = {k: v for k, v in env.items() if k != "CRM_CASE_DB_PASSWORD"}
    result = subprocess.run(["sh", str(ROOT / "deploy/postgres/init.sh")], env=missing, capture_output=True, text=True)
    assert result.returncode != 0 and "CRM_CASE_DB_PASSWORD" in result.stderr


def _kustomized() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/k8s")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def test_kubernetes_manifests_build_and_validate_offline() -> None:
    import kubernetes_validate  # requirements-dev.txt; schemas bundled, no cluster needed

    for doc in _kustomized():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kubernetes_services_use_their_own_kafka_users_and_secrets() -> None:
    docs = _kustomized()
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "crm-config")["data"]
    assert config["CRM_ENV"] == "production"
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name in SERVICES:
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["KAFKA_SASL_USERNAME"]["value"] == f"crm-{name}"
        assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "crm-kafka", "key": name}
        assert env["AUTH_EVENT_PUBLIC_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "crm-auth-events"
        for e in container["env"]:  # no secret written in a manifest
            if any(marker in e["name"] for marker in SECRET_SETTINGS):
                assert "valueFrom" in e, e["name"]
    intake_env = {e["name"] for e in deployments["intake"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {
        "AUTH_EVENT_SIGNING_KEY",
        "AUTH_EVENT_SIGNING_KEY_ID",
        "AUTH_BOOTSTRAP_ADMIN_KEY",
        "MASTER_KEY",
    } <= intake_env
    notification_env = {
        e["name"] for e in deployments["notification"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "WEBHOOK_SECRET" in notification_env
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "kafka-acls")
    volume = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    script = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume)
    assert script["data"]["kafka-acls.sh"] == (ROOT / "deploy/k8s/kafka-acls.sh").read_text()


# --- compose: pinned images, healthchecks, start order (docs/production.md#docker-compose) ---------------------

# Long-running containers that cannot run a healthcheck, and why.
NO_HEALTHCHECK = {"otel-collector": "the contrib image has neither a shell nor an HTTP client"}
CURRENT_MAJOR = {
    "apache/kafka": "4.",
    "postgres": "18.",
    "jaegertracing/jaeger": "2.",  # v2 takes OTLP natively; v1 (all-in-one) is end of life
    "prom/prometheus": "v3.",
    "grafana/grafana": "12.",
}


def _one_shot(svc: dict[str, Any]) -> bool:
    return svc.get("restart") == "no"


def test_compose_images_are_pinned_to_exact_current_versions() -> None:
    services = _compose()["services"]
    seen = set()
    for name, svc in services.items():
        repository, _, tag = svc["image"].rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {svc['image']} is not pinned"
        if repository == "crm-backbone":  # built here (deploy/Dockerfile)
            assert "build" in svc, name
            continue
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?", tag), f"{name}: {tag} is not an exact version"
        if repository in CURRENT_MAJOR:
            assert tag.startswith(CURRENT_MAJOR[repository]), f"{name}: {svc['image']}"
            seen.add(repository)
    assert seen == set(CURRENT_MAJOR)
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")


def test_compose_services_have_healthchecks_and_wait_for_healthy_dependencies() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        if not _one_shot(svc) and name not in NO_HEALTHCHECK:
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, how in (svc.get("depends_on") or {}).items():
            target = services[dependency]
            if _one_shot(target):
                assert how == {"condition": "service_completed_successfully"}, f"{name} -> {dependency}"
            elif "healthcheck" in target:
                assert how == {"condition": "service_healthy"}, f"{name} -> {dependency}"
    for name in SERVICES:
        svc = services[name]
        check = " ".join(svc["healthcheck"]["test"])
        assert check.startswith("CMD python -c") and "urllib.request.urlopen" in check and "/readyz" in check
        assert svc["environment"]["MIGRATE_ON_START"] == "false"
        assert svc["environment"]["KAFKA_CREATE_TOPICS"] == "false"
        done = {"condition": "service_completed_successfully"}
        healthy = {"condition": "service_healthy"}
        assert svc["depends_on"] == {
            "kafka": healthy,
            "postgres": healthy,
            "kafka-setup": done,
            "topics": done,
            f"migrate-{name}": done,
        }
        migrate = services[f"migrate-{name}"]
        assert migrate["command"] == ["python", "-m", "crmtools.cli", "migrate", name]
        assert migrate["environment"]["DATABASE_URL"] == svc["environment"]["DATABASE_URL"]
    topics_job = services["topics"]
    assert topics_job["command"] == ["python", "-m", "crmtools.cli", "topics", "apply"]
    assert topics_job["environment"]["KAFKA_SASL_USERNAME"] == "admin"  # the services' users may not create topics


def test_compose_alerts_reach_alertmanager_and_traces_reach_jaeger_v2() -> None:
    services = _compose()["services"]
    config = "./infra/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
    assert config in services["alertmanager"]["volumes"]
    prometheus = yaml.safe_load((ROOT / "infra/prometheus/prometheus.compose.yml").read_text())
    targets = [t for am in prometheus["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]]
    assert targets == ["alertmanager:9093"]
    collector = yaml.safe_load((ROOT / "infra/otel/collector.yaml").read_text())
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"  # Jaeger v2's OTLP/gRPC receiver


def test_compose_topics_are_infra_topics_with_one_replica() -> None:
    source = yaml.safe_load((ROOT / "infra/topics.yaml").read_text())["topics"]
    compose = yaml.safe_load((ROOT / "deploy/kafka/topics.compose.yaml").read_text())["topics"]
    one_node = [{**t, "replication_factor": 1, "config": {**t["config"], "min.insync.replicas": 1}} for t in source]
    assert compose == one_node
    mount = "./deploy/kafka/topics.compose.yaml:/app/infra/topics.yaml:ro"  # the image's default path
    for name in [*SERVICES, "topics"]:
        assert mount in _compose()["services"][name]["volumes"], name
