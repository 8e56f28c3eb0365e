"""Generate contracts/schemas/*.json, contracts/asyncapi.yaml, the services' OpenAPI snapshots
(contracts/openapi/<service>.json), the docs pages made from them (docs/events.md,
docs/api/<service>.md) and the subscribers' event models (clients/python/crm_client/event_types.py)
from the models and the apps; and the Prometheus operator's PrometheusRule
from infra/prometheus/alerts.yml (deploy/k8s/monitoring/prometheusrule.yaml).

python -m contracts.generate          # rewrite the files
python -m contracts.generate --check  # exit 1 if the checked-in files differ (CI)
"""

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from contracts import topics
from contracts.client_events import render_client_event_types
from contracts.docs import render_api_md, render_events_md
from contracts.prometheus_rule import ALERTS, PROMETHEUS_RULE, render_prometheus_rule
from contracts.registry import REGISTRY, schema_id
from contracts.services import SERVICE_NAMES

HERE = Path(__file__).parent
SCHEMA_DIR = HERE / "schemas"
ASYNCAPI = HERE / "asyncapi.yaml"
OPENAPI_DIR = HERE / "openapi"
DOCS_DIR = HERE.parent / "docs"
CLIENT_EVENT_TYPES = HERE.parent / "clients" / "python" / "crm_client" / "event_types.py"

# CloudEvents 1.0 Kafka protocol binding, binary mode: attributes travel as ce_* headers.
ENVELOPE_HEADERS: dict[str, dict[str, Any]] = {
    "ce_specversion": {"type": "string", "const": "1.0"},
    "ce_id": {"type": "string", "format": "uuid", "description": "Unique forever; the dedup key."},
    "ce_source": {"type": "string", "description": "Producing service, e.g. /crm/intake."},
    "ce_type": {"type": "string", "description": "Event type, e.g. crm.interaction.recorded.v1."},
    "ce_time": {"type": "string", "format": "date-time", "description": "When the event was recorded."},
    "ce_subject": {"type": "string", "description": "Customer id; also the message key."},
    "ce_traceparent": {"type": "string", "description": "W3C trace context of the producing request."},
    "ce_dataschema": {
        "type": "string",
        "format": "uri",
        "description": "The `$id` of the data's JSON Schema; absent in events published before it was added.",
    },
    "content-type": {"type": "string", "const": "application/json"},
}


def schema_for(type_name: str) -> dict[str, Any]:
    et = REGISTRY[type_name]
    schema = et.model.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id(type_name),
        "title": type_name,
        "description": et.summary,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def render_schema(type_name: str) -> str:
    return json.dumps(schema_for(type_name), indent=2, sort_keys=True) + "\n"


def render_asyncapi() -> str:
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in (*topics.ALL_EVENT_TOPICS, topics.DEADLETTER):
        channel_id = topic.replace(".", "_")
        channel_messages: dict[str, Any] = {}
        for et in REGISTRY.values():
            if et.topic != topic:
                continue
            message_id = et.name.replace(".", "_")
            messages[message_id] = {
                "name": et.name,
                "summary": et.summary,
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
                "payload": {"$ref": f"./schemas/{et.name}.json"},
                "bindings": {"kafka": {"key": {"type": "string", "description": "Customer id."}}},
            }
            channel_messages[message_id] = {"$ref": f"#/components/messages/{message_id}"}
        if topic == topics.DEADLETTER:
            messages["deadletter"] = {
                "name": "deadletter",
                "summary": "The original key, value and headers, plus dlq_* headers with the reason.",
                "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
                "payload": {"type": "string", "format": "binary"},
            }
            channel_messages["deadletter"] = {"$ref": "#/components/messages/deadletter"}
        channels[channel_id] = {
            "address": topic,
            "description": topics.DESCRIPTIONS[topic],
            "messages": channel_messages,
            "bindings": {"kafka": {"partitions": 6, "topicConfiguration": {"cleanup.policy": ["delete"]}}},
        }
        operations[f"receive_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Subscribe to {topic}.",
        }
    doc = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CRM interaction events",
            "version": "1.0.0",
            "description": (
                "Every customer fact as a CloudEvent 1.0 in Kafka binary mode: attributes in ce_* headers, "
                "JSON data in the value, key = customer id. Generated by `python -m contracts.generate`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "development": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "make run: the embedded broker",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "CloudEventHeaders": {
                    "type": "object",
                    "required": [h for h in ENVELOPE_HEADERS if h not in ("content-type", "ce_dataschema")],
                    "properties": ENVELOPE_HEADERS,
                },
                "DeadLetterHeaders": {
                    "type": "object",
                    "properties": {
                        "dlq_reason": {"type": "string"},
                        "dlq_service": {"type": "string", "description": "The consumer that gave up."},
                        "dlq_topic": {"type": "string"},
                        "dlq_partition": {"type": "string"},
                        "dlq_offset": {"type": "string"},
                    },
                },
            },
        },
    }
    return yaml.safe_dump(doc, sort_keys=False, width=110)


def render_openapi(service: str) -> str:
    """The service's OpenAPI document, from its app as main.py builds it (nothing is started)."""
    # intake's settings insist on a master key; the document does not depend on it.
    os.environ.setdefault("MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    app = importlib.import_module(f"{service}.main").app  # imported late: services import contracts
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[Path, str]:
    files = {SCHEMA_DIR / f"{name}.json": render_schema(name) for name in REGISTRY}
    files[ASYNCAPI] = render_asyncapi()
    schemas = {name: schema_for(name) for name in REGISTRY}
    files[DOCS_DIR / "events.md"] = render_events_md(schemas)
    files[CLIENT_EVENT_TYPES] = render_client_event_types(schemas)
    for service in SERVICE_NAMES:
        openapi = render_openapi(service)
        files[OPENAPI_DIR / f"{service}.json"] = openapi
        files[DOCS_DIR / "api" / f"{service}.md"] = render_api_md(service, json.loads(openapi))
    files[PROMETHEUS_RULE] = render_prometheus_rule(ALERTS.read_text())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in files differ")
    args = parser.parse_args(argv)
    stale = [p for p, text in expected_files().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(HERE.parent)} (run python -m contracts.generate)")
        return 1 if stale else 0
    for p, text in expected_files().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
