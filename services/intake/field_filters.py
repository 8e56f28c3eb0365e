"""The field and tag filters of GET /v1/customers (issue 29, docs/customer-fields.md):
`field.<name>=<value>` (repeatable, every one must hold) and `tag=` (repeatable: all of them)."""

from collections.abc import Iterable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from servicekit.http import ApiError, decode_cursor

from contracts.fields import TAGS_PER_RECORD_MAX, normalise_tag
from intake import domain, errors, field_store, fields, handlers
from intake.deps import IntakeRuntime

FIELD_FILTER = "field."
FIELD_FILTERS_MAX = 10


def invalid(field: str, reason: str) -> ApiError:
    return ApiError(422, "validation_failed", f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def filters_of(request: Request) -> list[tuple[str, str]]:
    """The `field.<name>=<value>` pairs of the query, as given."""
    return [(k[len(FIELD_FILTER) :], v) for k, v in request.query_params.multi_items() if k.startswith(FIELD_FILTER)]


async def filtered_list(
    rt: IntakeRuntime, field_filters: list[tuple[str, str]], tags: Iterable[str], limit: int, before: str | None
) -> Response:
    """GET /v1/customers by field values and tags: every filter must hold; pages by customer id,
    descending, `before` the next_before of the previous page."""
    tag_list = list(tags)
    if len(field_filters) > FIELD_FILTERS_MAX:
        raise invalid("query", f"at most {FIELD_FILTERS_MAX} field filters")
    if len(tag_list) > TAGS_PER_RECORD_MAX:
        raise invalid("query.tag", f"at most {TAGS_PER_RECORD_MAX} tags")
    after = decode_cursor(field_store.decode_cursor, before)
    normal: list[str] = []
    for tag in tag_list:
        try:
            normal.append(normalise_tag(tag))
        except ValueError as exc:
            raise invalid("query.tag", str(exc)) from exc
    async with rt.db.acquire() as conn:
        definitions = {name: d for name, (_, d) in (await field_store.definitions(conn)).items()}
        keys: list[tuple[str, str]] = []
        for name, text in field_filters:
            where = f"query.{FIELD_FILTER}{name}"
            definition = definitions.get(name)
            if definition is None:
                raise invalid(where, "no such customer field (see GET /v1/admin/fields)")
            try:
                keys.append((name, fields.filter_key(definition, text, where)))
            except domain.InvalidInput as exc:
                raise errors.invalid(exc) from exc
        ids, next_before = await field_store.filtered_customers(conn, keys, sorted(set(normal)), limit, after)
    items = [await handlers.get_customer(rt.db, rt.context.vault, cid) for cid in ids]
    return JSONResponse({"items": items, "next_before": next_before})
