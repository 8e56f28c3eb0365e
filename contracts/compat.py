"""Is a new version of an event schema safe for consumers built against an older one?

A consumer of the old schema must accept every event the new schema allows. So, for each
property the old schema declares: a field it requires must still be required, and the
property's schema must not change (a new enum value, a changed type or format would break
it). New properties are fine, since consumers ignore what they do not know.
"""

from typing import Any


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    """Inline local $refs, so two schemas compare by meaning rather than by $defs layout."""
    if isinstance(schema, dict):
        if "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
            return _resolve(root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root)
        return {k: _resolve(v, root) for k, v in schema.items() if k not in ("$defs", "description", "title")}
    if isinstance(schema, list):
        return [_resolve(v, root) for v in schema]
    return schema


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old_r, new_r = _resolve(old, old), _resolve(new, new)
    problems: list[str] = []
    old_props: dict[str, Any] = old_r.get("properties", {})
    new_props: dict[str, Any] = new_r.get("properties", {})
    new_required = set(new_r.get("required", []))
    for name in old_r.get("required", []):
        if name not in new_required:
            problems.append(f"required field '{name}' is no longer required")
    for name, schema in old_props.items():
        if name not in new_props:
            problems.append(f"field '{name}' was removed")
        elif new_props[name] != schema:
            problems.append(f"field '{name}' changed its schema")
    return problems
