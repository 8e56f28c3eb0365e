"""The console's label table (services/console/labels.json) against contracts: every event type
has a human label, and every field a label names is a field of that type's data, so a new type
or a renamed field cannot leave the timeline showing a raw type name or an empty word.

Pure: no browser, no stack (the rendering itself is tested in Chromium in test_console_timeline).
"""

import json
import re
from pathlib import Path
from typing import Any

from contracts.registry import REGISTRY

TABLE = Path(__file__).resolve().parents[2] / "services" / "console" / "labels.json"
FIELD = re.compile(r"\{(\w+)(?:\|[^}]*)?\}")


def table() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TABLE.read_text(encoding="utf-8"))
    return data


def test_every_event_type_in_contracts_has_a_label_and_no_label_names_an_unknown_type() -> None:
    labels = table()["labels"]
    assert sorted(set(REGISTRY) - set(labels)) == [], "event types without a console label"
    assert sorted(set(labels) - set(REGISTRY)) == [], "labels of types contracts does not know"


def test_labels_are_words_and_name_only_fields_of_their_type() -> None:
    for name, template in table()["labels"].items():
        fields = set(REGISTRY[name].model.model_fields)
        named = FIELD.findall(template)
        assert set(named) <= fields, f"{name}: {template!r} names fields its data lacks: {set(named) - fields}"
        words = FIELD.sub("", template).replace("[", "").replace("]", "")
        assert "crm." not in words and not re.search(r"\.v\d", words), f"{name}: a raw type name in {template!r}"
        assert template.count("[") == template.count("]"), f"{name}: unbalanced [ ] in {template!r}"


def test_words_are_for_fields_of_some_event_type() -> None:
    every_field = {f for t in REGISTRY.values() for f in t.model.model_fields}
    words = table()["words"]
    assert set(words) <= every_field, f"words for unknown fields: {set(words) - every_field}"
    for field, values in words.items():
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()), field


def test_labels_js_builds_text_only() -> None:
    """Labels carry event data (an owner's, an agent's name): text, never markup or code."""
    script = (TABLE.parent / "labels.js").read_text(encoding="utf-8")
    assert not re.search(r"\beval\(|new Function\(|\.innerHTML\b|insertAdjacentHTML|document\.write", script)
