"""Reading the shipped alert rules, their promtool tests, the runbooks and the Alertmanager config."""

import re
from pathlib import Path
from typing import Any

import yaml

from tests.ops.dashboards import ROOT

ALERTS = ROOT / "infra" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "infra" / "prometheus" / "alerts.test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTMANAGER_CONFIG = ROOT / "infra" / "alertmanager" / "alertmanager.yml"

SEVERITIES = {"page", "ticket"}
# What every runbook section says, in this order (docs/runbooks.md).
RUNBOOK_PARTS = ("**Means.**", "**Likely causes.**", "**Check.**", "**Mend.**", "**Escalate**")


def load_yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def alert_rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule of alerts.yml by name (recording rules left out)."""
    rules: dict[str, dict[str, Any]] = {}
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in rules, f"{rule['alert']} defined twice"
                rules[rule["alert"]] = rule
    return rules


def alert_tests() -> list[dict[str, Any]]:
    """Every alert_rule_test entry of alerts.test.yml, each with its test group's name."""
    return [
        {**case, "group": test.get("name", "")}
        for test in load_yaml(ALERTS_TEST)["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def runbook_sections() -> dict[str, str]:
    """The `## ` sections of docs/runbooks.md: anchor (as mkdocs makes it) -> text."""
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", RUNBOOKS.read_text(), flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        sections[anchor(heading)] = body
    return sections


def anchor(heading: str) -> str:
    """mkdocs' (Python-Markdown toc) slug: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", slug)


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted key path, value) of every mapping entry in a YAML tree."""
    out: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((f"{path}.{key}" if path else str(key), value))
            out.extend(walk(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(walk(value, f"{path}[{i}]"))
    return out
