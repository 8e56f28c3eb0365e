"""The case list's field and tag filters (issue 29): `field.<name>=<value>` and `tag=<tag>`.

A query string is text; the value is read as the field's type takes it ("3" for a number,
"true" for a bool) and then validated like a value being set, so it compares with what
validate_value stored (a date as YYYY-MM-DD, 3.0 as 3). Personal fields are sealed: no filter.
"""

from collections.abc import Iterable
from typing import Any

import asyncpg
from servicekit.http import ApiError

from case import field_store
from contracts import fields as f

PREFIX = "field."
MAX_FIELD_FILTERS = 20


def _typed(definition: f.FieldDefinition, text: str) -> Any:
    if definition.type == "number":
        try:
            return int(text) if text.strip().lstrip("+-").isdigit() and text.isascii() else float(text)
        except ValueError as exc:
            raise f.FieldValueError("expected a number") from exc
    if definition.type == "bool":
        if text not in ("true", "false"):
            raise f.FieldValueError("expected true or false")
        return text == "true"
    return text


def _invalid(errors: list[dict[str, str]]) -> ApiError:
    return ApiError(422, "validation_failed", "some filters are not valid", errors=errors)


async def field_filters(pool: asyncpg.Pool, params: Iterable[tuple[str, str]]) -> list[tuple[str, Any]]:
    """(name, value) pairs from the query's field.<name> parameters, or 422 naming each bad one."""
    wanted = [(key[len(PREFIX) :], text) for key, text in params if key.startswith(PREFIX)]
    if not wanted:
        return []
    if len(wanted) > MAX_FIELD_FILTERS:
        raise _invalid([{"field": "query.field", "reason": f"at most {MAX_FIELD_FILTERS} field filters"}])
    async with pool.acquire() as conn:
        definitions = await field_store.definitions(conn)
    out: list[tuple[str, Any]] = []
    errors: list[dict[str, str]] = []
    for name, text in wanted:
        where = f"query.{PREFIX}{name[:64]}"
        definition = definitions.get(name)
        if definition is None:
            errors.append({"field": where, "reason": "unknown field"})
        elif definition.personal:
            errors.append({"field": where, "reason": "personal_field"})
        else:
            try:
                value = f.validate_value(definition, _typed(definition, text))
            except f.FieldValueError as exc:
                errors.append({"field": where, "reason": exc.reason})
                continue
            out.append((name, value))
    if errors:
        raise _invalid(errors)
    return out


def tag_filters(tags: list[str]) -> list[str]:
    """The tags normalised, or 422 naming each bad one."""
    out, errors = [], []
    for i, tag in enumerate(tags):
        try:
            out.append(f.normalise_tag(tag))
        except ValueError as exc:
            errors.append({"field": f"query.tag.{i}", "reason": str(exc)})
    if errors:
        raise _invalid(errors)
    return out
