"""The Kubernetes manifests as the kubelet and the API server would take them, offline: every pod
can start (numeric user, writable /tmp, resources, probes, every referenced object exists or is
provisioned by the operator), and the disruption budgets, NetworkPolicies, setup Jobs and the
Prometheus operator's objects say what docs/production.md says."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from contracts.prometheus_rule import ALERTS
from contracts.services import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
IMAGE = "crm-backbone"
# Who calls whom (the settings KEY_SERVICE_URL, CASE_URL, NOTIFICATION_URL, ANALYTICS_URL).
CALLS = {
    "intake": {"case", "notification", "analytics"},
    **{s: {"intake"} for s in ("case", "notification", "analytics")},
}
CALLERS = {s: {c for c, callees in CALLS.items() if s in callees} for s in SERVICE_NAMES}


def build(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build the manifests (kubectl kustomize)"
    built = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }


def dockerfile_user() -> str:
    users = [
        line.split()[1] for line in (ROOT / "deploy/Dockerfile").read_text().splitlines() if line.startswith("USER ")
    ]
    assert len(users) == 1
    return users[0]


def provisioned_by_the_operator() -> set[str]:
    """The secrets and config maps docs/production.md tells the operator to create."""
    text = (ROOT / "docs/production.md").read_text()
    section = text.split("## Secrets to provision", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE))


def references(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every Secret and ConfigMap the pod needs."""
    refs: set[tuple[str, str]] = set()
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                refs.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                refs.add(("Secret", source["secretRef"]["name"]))
        for env in c.get("env", []):
            value_from = env.get("valueFrom", {})
            if "secretKeyRef" in value_from:
                refs.add(("Secret", value_from["secretKeyRef"]["name"]))
            if "configMapKeyRef" in value_from:
                refs.add(("ConfigMap", value_from["configMapKeyRef"]["name"]))
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
    return refs


def test_the_image_runs_as_a_numeric_user_and_ships_the_topic_definitions() -> None:
    uid, _, gid = dockerfile_user().partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit()
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile
    # the services and `crm topics apply` read <project root>/infra/topics.yaml
    assert "COPY infra/topics.yaml ./infra/topics.yaml" in dockerfile


def test_every_pod_can_start() -> None:
    docs = build(K8S)
    built = {(d["kind"], d["metadata"]["name"]) for d in docs}
    provisioned = provisioned_by_the_operator()
    image_uid = int(dockerfile_user().split(":")[0])
    templates = pod_templates(docs)
    assert {f"Deployment/{s}" for s in SERVICE_NAMES} <= set(templates)
    for where, template in templates.items():
        spec = template["spec"]
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            name = f"{where} {c['name']}"
            security = {**pod_security, **c.get("securityContext", {})}
            # the kubelet checks runAsNonRoot against a number: the pod's, or the image's USER
            assert security.get("runAsNonRoot") is True, name
            assert isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0, name
            if c["image"].startswith(IMAGE):
                assert security["runAsUser"] == image_uid, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert security.get("capabilities", {}).get("drop") == ["ALL"], name
            if security.get("readOnlyRootFilesystem"):
                tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name}: read-only root without a /tmp"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})), f"{name}: {bound}"
        if where.startswith("Deployment/"):  # long-running: the kubelet must know when it is ready and alive
            for c in spec["containers"]:
                assert {"readinessProbe", "livenessProbe"} <= set(c), where
        for kind, ref in references(spec):
            assert (kind, ref) in built or ref in provisioned, f"{where}: {kind} {ref} is neither built nor provisioned"


def test_the_secrets_docs_list_are_those_the_manifests_use() -> None:
    docs = build(K8S)
    built = {d["metadata"]["name"] for d in docs}
    used = {ref for t in pod_templates(docs).values() for _, ref in references(t["spec"])}
    assert provisioned_by_the_operator() == used - built


def test_each_service_has_a_disruption_budget() -> None:
    docs = build(K8S)
    budgets = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    for d in (d for d in docs if d["kind"] == "Deployment"):
        name = d["metadata"]["name"]
        budget = budgets[name]
        assert budget["selector"] == d["spec"]["selector"]
        assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 1


def test_setup_jobs_run_topics_and_migrations_and_the_services_wait_for_them() -> None:
    docs = build(K8S)
    jobs = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Job"}
    topics = jobs["crm-topics"]["containers"][0]
    assert topics["command"] == ["python", "-m", "crmtools.cli", "topics", "apply"]
    topics_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in topics["env"] if "valueFrom" in e}
    assert topics_env["KAFKA_SASL_USERNAME"] == {"name": "crm-kafka", "key": "admin-username"}  # may create topics
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "crm-config")["data"]
    assert config["MIGRATE_ON_START"] == "false"
    assert config["KAFKA_CREATE_TOPICS"] == "false"
    scripts = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    for service in SERVICE_NAMES:
        migrate = jobs[f"crm-migrate-{service}"]["containers"][0]
        assert migrate["command"] == ["python", "-m", "crmtools.cli", "migrate", service]
        env = {e["name"]: e for e in migrate["env"]}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "crm-database", "key": service}
        pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == service)
        spec = pod["spec"]["template"]["spec"]
        (wait,) = spec["initContainers"]
        assert wait["command"] == ["python", "/scripts/wait-for-setup.py", service]
        assert {e["name"]: e for e in wait["env"]}["DATABASE_URL"] == env["DATABASE_URL"]
        volume = next(v for v in spec["volumes"] if v["name"] == "scripts")["configMap"]["name"]
        assert scripts[volume]["wait-for-setup.py"] == (K8S / "wait-for-setup.py").read_text()


# --- NetworkPolicies --------------------------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        inside = labels.get(expression["key"]) in expression.get("values", [])
        if (expression["operator"] == "In") != inside:
            return False
    return True


def allowed(docs: list[dict[str, Any]], labels: dict[str, str], direction: str) -> dict[str, set[Any]]:
    """Who the pod with these labels may reach (egress) or be reached by (ingress), by kind of peer:
    pods of this namespace (by name), other namespaces (by name), ipBlocks (cidr -> ports)."""
    peers: dict[str, set[Any]] = {"pods": set(), "namespaces": set(), "cidrs": set()}
    key = "to" if direction == "egress" else "from"
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in ("Deployment", "Job")]
    for policy in (d["spec"] for d in docs if d["kind"] == "NetworkPolicy"):
        if not selects(policy["podSelector"], labels):
            continue
        for rule in policy.get(direction, []):
            ports = frozenset(p["port"] for p in rule.get("ports", []))
            for peer in rule.get(key, []):
                if "ipBlock" in peer:
                    peers["cidrs"].add((peer["ipBlock"]["cidr"], frozenset(peer["ipBlock"].get("except", [])), ports))
                elif "namespaceSelector" in peer:
                    peers["namespaces"].add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
                else:
                    peers["pods"] |= {p["app.kubernetes.io/name"] for p in pods if selects(peer["podSelector"], p)}
    return peers


def test_network_policies_deny_by_default_and_allow_only_the_calls_the_code_makes() -> None:
    docs = build(K8S)
    default = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "crm-default-deny")
    assert default["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for service in SERVICE_NAMES:
        labels = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == service)
        labels = labels["spec"]["template"]["metadata"]["labels"]
        egress = allowed(docs, labels, "egress")
        assert egress["pods"] == CALLS[service], service
        # DNS, its database, the brokers, the collector (namespaces as network-peers.yaml says)
        assert egress["namespaces"] == {"kube-system", "postgres", "kafka", "observability"}, service
        ingress = allowed(docs, labels, "ingress")
        assert ingress["pods"] == CALLERS[service], service
        assert ingress["namespaces"] == {"ingress-nginx", "monitoring"}, service
        if service != "notification":
            assert egress["cidrs"] == set(), service
    internet = allowed(docs, {"app.kubernetes.io/name": "notification"}, "egress")["cidrs"]
    assert {cidr for cidr, _, _ in internet} == {"0.0.0.0/0", "::/0"}
    for cidr, closed, ports in internet:
        assert ports == {443, 587, 465, 25}
        if cidr == "0.0.0.0/0":  # no cloud metadata service, no private network
            assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= closed
    for job in (d for d in docs if d["kind"] == "Job"):
        egress = allowed(docs, job["spec"]["template"]["metadata"]["labels"], "egress")
        assert {"kube-system", "postgres", "kafka"} <= egress["namespaces"], job["metadata"]["name"]
        assert not egress["pods"] and not egress["cidrs"]


# --- the Prometheus operator ------------------------------------------------------------------------------------


def test_monitoring_objects_match_the_services_and_the_plain_rules_file() -> None:
    base = build(K8S)
    assert not [d for d in base if d["apiVersion"].startswith("monitoring.coreos.com/")]  # applies without the CRDs
    monitoring = build(K8S / "monitoring")
    assert {(d["apiVersion"], d["kind"]) for d in monitoring} == {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
    monitor = next(d for d in monitoring if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "crm"
    services = [
        d for d in base if d["kind"] == "Service" and selects(monitor["spec"]["selector"], d["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in services} == set(SERVICE_NAMES)
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert endpoint["honorLabels"] is True  # the services' own `service` label
        for s in services:
            assert endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}, s["metadata"]["name"]
    rule = next(d for d in monitoring if d["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
