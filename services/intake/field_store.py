"""SQL for customer fields and tags (migration 005): the projection of intake's field and tag
events, written in the same transaction as the events, rebuilt from them by `rebuild`, and the
reads of the routes (a customer's view, the list filtered by field values and tags)."""

import base64
import binascii
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from eventkit import crypto
from eventkit.db import Connection
from eventkit.envelope import Envelope
from eventkit.eventstore import row_to_stored

from contracts.fields import (
    CUSTOMER_FIELD_DEFINED,
    CUSTOMER_FIELDS_SET,
    CUSTOMER_TAGS_CHANGED,
    FieldDefinition,
    personal_value,
)
from intake.fields import value_key
from intake.vault import Vault

TYPES = (CUSTOMER_FIELD_DEFINED, CUSTOMER_FIELDS_SET, CUSTOMER_TAGS_CHANGED)
# Definitions are written one at a time: the count limit and the version need a stable view.
DEFINITIONS_LOCK = 7_300_102


def personal_path(name: str) -> str:
    """Where a personal value is sealed in a fields_set event (and its token's place)."""
    return f"personal.{name}"


async def definitions(conn: Connection) -> dict[str, tuple[int, FieldDefinition]]:
    rows = await conn.fetch("SELECT name, version, definition FROM customer_field_definitions")
    return {r["name"]: (r["version"], FieldDefinition.model_validate(r["definition"])) for r in rows}


async def definition_rows(conn: Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT name, version, definition, defined_at, defined_by FROM customer_field_definitions ORDER BY name"
    )
    return [
        {
            **r["definition"],
            "version": r["version"],
            "defined_at": r["defined_at"].isoformat(),
            "defined_by": r["defined_by"],
        }
        for r in rows
    ]


# --- the projection ----------------------------------------------------------------------------


async def apply(conn: Connection, events: Iterable[Envelope]) -> None:
    """Project field and tag events (as stored: personal values sealed); other types are skipped."""
    for e in events:
        if e.type == CUSTOMER_FIELD_DEFINED:
            await _defined(conn, e.data, e.time)
        elif e.type == CUSTOMER_FIELDS_SET:
            await _fields_set(conn, e.data, e.time)
        elif e.type == CUSTOMER_TAGS_CHANGED:
            await _tags_changed(conn, e.data, e.time)


async def _defined(conn: Connection, data: dict[str, Any], at: datetime) -> None:
    definition = data["definition"]
    await conn.execute(
        "INSERT INTO customer_field_definitions (name, version, definition, defined_at, defined_by)"
        " VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version,"
        " definition = EXCLUDED.definition, defined_at = EXCLUDED.defined_at, defined_by = EXCLUDED.defined_by",
        definition["name"],
        data["version"],
        definition,
        at,
        data["defined_by"],
    )


async def _fields_set(conn: Connection, data: dict[str, Any], at: datetime) -> None:
    tokens: dict[str, str] = (data.get("sealed") or {}).get("fields", {})
    rows: list[tuple[str, Any, str | None, str | None]] = [
        (name, value, value_key(value), None) for name, value in data.get("values", {}).items()
    ]
    rows += [
        (name, None, None, tokens.get(personal_path(name)) if text is not None else None)
        for name, text in data.get("personal", {}).items()
    ]
    await conn.executemany(
        "INSERT INTO customer_field_values (customer_id, name, value, value_key, sealed, updated_at)"
        " VALUES ($1, $2, $3::jsonb, $4, $5, $6) ON CONFLICT (customer_id, name) DO UPDATE SET"
        " value = EXCLUDED.value, value_key = EXCLUDED.value_key, sealed = EXCLUDED.sealed,"
        " updated_at = EXCLUDED.updated_at",
        [(data["customer_id"], name, value, key, sealed, at) for name, value, key, sealed in rows],
    )


async def _tags_changed(conn: Connection, data: dict[str, Any], at: datetime) -> None:
    changes = [(t, True) for t in data["added"]] + [(t, False) for t in data["removed"]]
    await conn.executemany(
        "INSERT INTO customer_tags (customer_id, tag, present, updated_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (customer_id, tag) DO UPDATE SET present = EXCLUDED.present, updated_at = EXCLUDED.updated_at",
        [(data["customer_id"], tag, present, at) for tag, present in changes],
    )


async def rebuild(conn: Connection, batch: int = 5000) -> int:
    """Empty the three tables and project every field and tag event of intake's store again, in
    the order they were stored. Run it in a transaction. Returns the events applied."""
    await conn.execute("TRUNCATE customer_field_definitions, customer_field_values, customer_tags")
    position, applied = 0, 0
    while True:
        rows = await conn.fetch(
            "SELECT position, stream_id, version, event_id, type, source, subject, time, traceparent, topic, data"
            " FROM events WHERE position > $1 AND type = ANY($2::text[]) ORDER BY position LIMIT $3",
            position,
            list(TYPES),
            batch,
        )
        if not rows:
            return applied
        await apply(conn, [row_to_stored(r).event for r in rows])
        applied += len(rows)
        position = rows[-1]["position"]


# --- reads -------------------------------------------------------------------------------------


async def view_rows(
    conn: Connection, customer_id: str, merged: Sequence[str]
) -> tuple[list[asyncpg.Record], list[str]]:
    """The customer's field rows as its view takes them (name, value, sealed, owner: the id that
    set it), cleared ones left out, and its tags: its own first, then its merged ids' latest."""
    ids = [customer_id, *merged]
    rows = await conn.fetch(
        "SELECT * FROM (SELECT DISTINCT ON (name) name, value, sealed, customer_id AS owner"
        " FROM customer_field_values WHERE customer_id = ANY($1::text[])"
        " ORDER BY name, customer_id = $2 DESC, updated_at DESC) v"
        " WHERE value IS NOT NULL OR sealed IS NOT NULL ORDER BY name",
        ids,
        customer_id,
    )
    tags = await conn.fetch(
        "SELECT * FROM (SELECT DISTINCT ON (tag) tag, present FROM customer_tags"
        " WHERE customer_id = ANY($1::text[]) ORDER BY tag, customer_id = $2 DESC, present DESC) t"
        " WHERE present ORDER BY tag",
        ids,
        customer_id,
    )
    return list(rows), [r["tag"] for r in tags]


async def view(conn: Connection, vault: Vault, customer_id: str, merged: Sequence[str]) -> dict[str, Any]:
    """`fields` (personal ones unsealed, "[erased]" once erased) and `tags` of a live customer."""
    rows, tags = await view_rows(conn, customer_id, merged)
    owners = {r["owner"] for r in rows if r["sealed"] is not None}
    keys, _ = await vault.keys(conn, owners, create=False)
    values: dict[str, Any] = {}
    for r in rows:
        if r["sealed"] is None:
            values[r["name"]] = r["value"]
        else:
            text = crypto.open_token(r["sealed"], r["owner"], personal_path(r["name"]), dict(keys))
            values[r["name"]] = personal_value(text)
    return {"fields": values, "tags": tags}


def encode_cursor(customer_id: str) -> str:
    return base64.urlsafe_b64encode(f"c|{customer_id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> str:
    """The customer id a next_before names; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("not a customer list cursor") from exc
    kind, _, customer_id = raw.partition("|")
    if kind != "c" or not customer_id:
        raise ValueError("not a customer list cursor")
    return customer_id


# The effective value of field $n of live customer c (its own row first, then its merged ids'
# latest), compared with $k; and whether tag $t is on it, by the same precedence. Each branch
# reads by an index: the primary keys, customers_merged_into.
_FIELD = (
    "(SELECT x.value_key FROM ("
    "SELECT v.value_key, true AS own, v.updated_at FROM customer_field_values v"
    " WHERE v.customer_id = c.customer_id AND v.name = ${n}"
    " UNION ALL SELECT v.value_key, false, v.updated_at FROM customers o"
    " JOIN customer_field_values v ON v.customer_id = o.customer_id AND v.name = ${n}"
    " WHERE o.merged_into = c.customer_id"
    ") x ORDER BY x.own DESC, x.updated_at DESC LIMIT 1) = ${k}"
)
_TAG = (
    "coalesce((SELECT x.present FROM ("
    "SELECT t.present, true AS own FROM customer_tags t WHERE t.customer_id = c.customer_id AND t.tag = ${t}"
    " UNION ALL SELECT t.present, false FROM customers o"
    " JOIN customer_tags t ON t.customer_id = o.customer_id AND t.tag = ${t} WHERE o.merged_into = c.customer_id"
    ") x ORDER BY x.own DESC, x.present DESC LIMIT 1), false)"
)


async def filtered_customers(
    conn: Connection, fields: Sequence[tuple[str, str]], tags: Sequence[str], limit: int, before: str | None
) -> tuple[list[str], str | None]:
    """Live customers whose view has every (field, value_key) and every tag, by customer id
    descending, `limit` a page from `before`; (ids, next_before or None on the last page).

    The candidates come from the first filter's index, in id order, so a page stops reading once
    it is full: live customers holding the value themselves, and (few: merged customers are) the
    survivors of merged ids holding it that have no value of their own. Each candidate is then
    checked against every filter by the view's precedence."""
    args: list[Any] = []

    def arg(value: Any) -> int:
        args.append(value)
        return len(args)

    below = "" if before is None else f" AND {{col}} < ${arg(before)}"
    if fields:
        n, k = arg(fields[0][0]), arg(fields[0][1])
        own = (
            "SELECT v.customer_id FROM customer_field_values v JOIN customers c ON c.customer_id = v.customer_id"
            f" AND c.merged_into IS NULL WHERE v.name = ${n} AND v.value_key = ${k}"
            + below.format(col="v.customer_id")
            + " ORDER BY v.customer_id DESC"
        )
        inherited = (
            "SELECT DISTINCT o.merged_into AS customer_id FROM customers o"
            f" JOIN customer_field_values v ON v.customer_id = o.customer_id AND v.name = ${n} AND v.value_key = ${k}"
            " WHERE o.merged_into IS NOT NULL"
            + below.format(col="o.merged_into")
            + " AND NOT EXISTS (SELECT 1 FROM customer_field_values s"
            f" WHERE s.customer_id = o.merged_into AND s.name = ${n})"
        )
    else:
        t = arg(tags[0])
        own = (
            "SELECT v.customer_id FROM customer_tags v JOIN customers c ON c.customer_id = v.customer_id"
            f" AND c.merged_into IS NULL WHERE v.tag = ${t} AND v.present"
            + below.format(col="v.customer_id")
            + " ORDER BY v.customer_id DESC"
        )
        inherited = (
            "SELECT DISTINCT o.merged_into AS customer_id FROM customers o"
            f" JOIN customer_tags v ON v.customer_id = o.customer_id AND v.tag = ${t} AND v.present"
            " WHERE o.merged_into IS NOT NULL"
            + below.format(col="o.merged_into")
            + f" AND NOT EXISTS (SELECT 1 FROM customer_tags s WHERE s.customer_id = o.merged_into AND s.tag = ${t})"
        )
    # Every filter, the first too: a survivor's merged ids may hold different values (the latest counts).
    conds = [_FIELD.format(n=arg(n), k=arg(k)) for n, k in fields]
    conds += [_TAG.format(t=arg(t)) for t in tags]
    sql = (
        f"SELECT c.customer_id FROM (({own}) UNION ALL ({inherited})) c"
        f" WHERE {' AND '.join(conds)} ORDER BY c.customer_id DESC LIMIT ${arg(limit + 1)}"
    )
    ids = [r["customer_id"] for r in await conn.fetch(sql, *args)]
    more = len(ids) > limit
    ids = ids[:limit]
    return ids, encode_cursor(ids[-1]) if more and ids else None
