"""The production-shaped files, checked without a container engine: every service in compose
and Kubernetes has its own database, probes and the settings the code reads."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from eventkit.settings import DEFAULT_PORTS, Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = list(DEFAULT_PORTS)


def test_compose_runs_each_service_on_its_own_database() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for required in ("kafka", "postgres", "otel-collector", "prometheus", "grafana", "jaeger"):
        assert required in services
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    init_sql = (ROOT / "deploy/postgres/init.sql").read_text()
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == ["python", "-m", f"{name}.main"]
        env = {**svc["environment"]}
        assert env["DATABASE_URL"].endswith(f"/crm_{name}")
        assert f"CREATE DATABASE crm_{name};" in init_sql
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
