"""Reading the shipped Grafana dashboards and Prometheus config (shared by the ops tests)."""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS_DIR = GRAFANA / "dashboards"
PROMETHEUS_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.yml"
PROMETHEUS_COMPOSE_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.compose.yml"

# What the test puts in place of Grafana's built-in interval variables.
BUILTINS: dict[str, str] = {
    "__rate_interval": "30s",
    "__interval": "15s",
    "__range": "5m",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}: {self.expr}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every shipped dashboard, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels, including those nested in collapsed rows."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def variables_used(expr: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}


def substitute(expr: str) -> str:
    """Built-in intervals become fixed durations; every template variable matches anything."""

    def replace(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        return BUILTINS.get(name, ".*")

    return _VARIABLE.sub(replace, expr)


def panel_queries() -> list[PanelQuery]:
    queries = []
    for dashboard in load_dashboards().values():
        for panel in all_panels(dashboard):
            for target in panel.get("targets", []):
                queries.append(PanelQuery(dashboard["title"], panel["title"], target["refId"], target["expr"]))
    return queries


def variable_queries() -> list[tuple[str, str]]:
    """(dashboard title, query) of every query-type template variable."""
    out = []
    for dashboard in load_dashboards().values():
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append((dashboard["title"], query))
    return out


_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """label_values(selector, label) -> (selector, label); the selector is optional."""
    m = _LABEL_VALUES.match(query.strip())
    if m is None:
        raise ValueError(f"not a label_values() query: {query}")
    return m.group(1), m.group(2)


def load_prometheus_config(path: Path = PROMETHEUS_CONFIG) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def scrape_targets(config: dict[str, Any], job: str = "crm") -> dict[str, str]:
    """service label -> host:port of one scrape job."""
    (scrape,) = [s for s in config["scrape_configs"] if s["job_name"] == job]
    out = {}
    for static in scrape["static_configs"]:
        (target,) = static["targets"]
        out[static["labels"]["service"]] = target
    return out
