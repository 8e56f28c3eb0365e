"""SQL for intake's own tables: customers, identifiers, consent, preferences, idempotency keys."""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from eventkit import crypto
from eventkit.db import json_text

from contracts.events import Preferences
from intake.domain import Ident, IdentitySnapshot, Merge, Suggestion, name_tokens
from intake.vault import IDENTIFIER_FIELD, NAME_FIELD, Vault

# Identity writes hold this lock shared; a merge holds it exclusively, so a merge never races
# a request that is linking identifiers to one of the customers it merges.
IDENTITY_LOCK = 7_300_101


def identity_lock_sql(exclusive: bool) -> str:
    return f"SELECT pg_advisory_xact_lock{'' if exclusive else '_shared'}({IDENTITY_LOCK})"


async def load_snapshot(
    conn: asyncpg.Connection,
    vault: Vault,
    idents: Iterable[Ident],
    customer_ids: Iterable[str],
    stored_keys: dict[str, bytes | None] | None = None,
) -> IdentitySnapshot:
    """What the database knows about these identifiers and customers. With `stored_keys`, the
    wrapped data key of each identifier's owner is put there as well (None: erased; absent: it
    has none yet), read in the same query, for Vault.keys to skip its own."""
    snapshot = IdentitySnapshot()
    by_index = {vault.index(i): i for i in set(idents)}
    rows = await conn.fetch(
        "SELECT i.value, i.customer_id, i.trust, c.created_at, k.customer_id IS NOT NULL AS has_key, k.wrapped"
        " FROM customer_identifiers i JOIN customers c ON c.customer_id = i.customer_id"
        " LEFT JOIN customer_keys k ON k.customer_id = i.customer_id"
        " WHERE i.value = ANY($1::text[])",
        sorted(by_index),
    )
    for r in rows:
        snapshot.owner[by_index[r["value"]].key] = r["customer_id"]
        snapshot.trust[by_index[r["value"]].key] = r["trust"]
        snapshot.created[r["customer_id"]] = r["created_at"]
        if stored_keys is not None and r["has_key"]:
            stored_keys[r["customer_id"]] = r["wrapped"]
    ids = sorted(set(customer_ids))
    if ids:
        rows = await conn.fetch(
            "SELECT c.customer_id, c.merged_into, c.created_at, s.created_at AS survivor_created"
            " FROM customers c LEFT JOIN customers s ON s.customer_id = c.merged_into"
            " WHERE c.customer_id = ANY($1::text[])",
            ids,
        )
        for r in rows:
            if r["merged_into"] is None:
                snapshot.created[r["customer_id"]] = r["created_at"]
            else:
                snapshot.merged_into[r["customer_id"]] = r["merged_into"]
                snapshot.created[r["merged_into"]] = r["survivor_created"]
    return snapshot


async def insert_customers(conn: asyncpg.Connection, created: Sequence[tuple[str, datetime]]) -> None:
    if created:
        await conn.execute(
            "INSERT INTO customers (customer_id, created_at) SELECT * FROM unnest($1::text[], $2::timestamptz[])",
            [c for c, _ in created],
            [t for _, t in created],
        )


async def insert_identifiers(
    conn: asyncpg.Connection, vault: Vault, links: Sequence[tuple[Ident, str, str]], keys: dict[str, bytes]
) -> None:
    """Store (identifier, customer, trust): the blind index and the sealed value, never the
    identifier itself.

    Raises UniqueViolationError if an identifier was claimed meanwhile (the caller retries)."""
    if links:
        await conn.execute(
            "INSERT INTO customer_identifiers (kind, value, channel, customer_id, sealed, sealed_by, trust)"
            " SELECT k, v, ch, c, s, c, t"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
            " AS x(k, v, ch, c, s, t)",
            [i.kind for i, _, _ in links],
            [vault.index(i) for i, _, _ in links],
            [i.channel or "" for i, _, _ in links],
            [c for _, c, _ in links],
            [crypto.encrypt_text(keys[c], f"{c}|{IDENTIFIER_FIELD}", i.value) for i, c, _ in links],
            [t for _, _, t in links],
        )


async def verify_identifiers(conn: asyncpg.Connection, vault: Vault, idents: Sequence[Ident]) -> None:
    if idents:
        await conn.execute(
            "UPDATE customer_identifiers SET trust = 'verified' WHERE value = ANY($1::text[])",
            [vault.index(i) for i in idents],
        )


async def identifier_trust(conn: asyncpg.Connection, vault: Vault, ident: Ident) -> tuple[str, str] | None:
    """(owner, trust) of one identifier, or None when nobody has it."""
    row = await conn.fetchrow(
        "SELECT customer_id, trust FROM customer_identifiers WHERE value = $1", vault.index(ident)
    )
    return (row["customer_id"], row["trust"]) if row else None


# --- merge suggestions ---------------------------------------------------------------------------


async def known_pairs(conn: asyncpg.Connection, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (a, b) pairs, a < b, that already have a suggestion, whatever its status."""
    wanted = sorted(set(pairs))
    if not wanted:
        return set()
    rows = await conn.fetch(
        "SELECT customer_a, customer_b FROM merge_suggestions s"
        " JOIN unnest($1::text[], $2::text[]) AS p(a, b) ON s.customer_a = p.a AND s.customer_b = p.b",
        [a for a, _ in wanted],
        [b for _, b in wanted],
    )
    return {(r["customer_a"], r["customer_b"]) for r in rows}


async def insert_suggestions(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, Suggestion, str, str]], at: datetime
) -> None:
    """(suggestion id, suggestion, sealed identifier, its key owner). A pair suggested meanwhile by
    another transaction raises UniqueViolationError (the caller decides again)."""
    if rows:
        await conn.executemany(
            "INSERT INTO merge_suggestions (suggestion_id, customer_a, customer_b, survivor_id, merged_id,"
            " linked_kind, linked_channel, linked_sealed, linked_sealed_by, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            [
                (sid, *s.pair, s.survivor_id, s.merged_id, s.linked_by.kind, s.linked_by.channel or "", token, by, at)
                for sid, s, token, by in rows
            ],
        )


SUGGESTION_COLUMNS = (
    "suggestion_id, customer_a, customer_b, survivor_id, merged_id, linked_kind, linked_channel,"
    " linked_sealed, linked_sealed_by, status, created_at, decided_at, decided_by"
)


async def suggestions(
    conn: asyncpg.Connection, status: str | None, customer_ids: Sequence[str], limit: int
) -> list[asyncpg.Record]:
    """Newest first; with customer_ids, only those naming one of them."""
    return await conn.fetch(
        f"SELECT {SUGGESTION_COLUMNS} FROM merge_suggestions"
        " WHERE ($1::text IS NULL OR status = $1)"
        " AND (cardinality($2::text[]) = 0 OR customer_a = ANY($2::text[]) OR customer_b = ANY($2::text[]))"
        " ORDER BY created_at DESC, suggestion_id LIMIT $3",
        status,
        list(customer_ids),
        limit,
    )


async def suggestion(conn: asyncpg.Connection, suggestion_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SUGGESTION_COLUMNS} FROM merge_suggestions WHERE suggestion_id = $1 FOR UPDATE", suggestion_id
    )


async def decide_suggestion(conn: asyncpg.Connection, suggestion_id: str, status: str, by: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE merge_suggestions SET status = $2, decided_by = $3, decided_at = $4 WHERE suggestion_id = $1",
        suggestion_id,
        status,
        by,
        at,
    )


async def created_at(conn: asyncpg.Connection, customer_ids: Sequence[str]) -> dict[str, datetime]:
    rows = await conn.fetch(
        "SELECT customer_id, created_at FROM customers WHERE customer_id = ANY($1::text[])", list(customer_ids)
    )
    return {r["customer_id"]: r["created_at"] for r in rows}


async def apply_merge(conn: asyncpg.Connection, merge: Merge, at: datetime) -> None:
    """Keep the invariants: identifiers on live customers, merged_into pointing at the final survivor."""
    s, m = merge.survivor_id, merge.merged_id
    await conn.execute("UPDATE customers SET merged_into = $1 WHERE merged_into = $2", s, m)
    await conn.execute(
        "UPDATE customers SET merged_into = $1, merged_parent = $1, merged_at = $3 WHERE customer_id = $2", s, m, at
    )
    await conn.execute("UPDATE customer_identifiers SET customer_id = $1 WHERE customer_id = $2", s, m)


async def erased_at(conn: asyncpg.Connection, customer_id: str) -> datetime | None:
    result: datetime | None = await conn.fetchval("SELECT erased_at FROM customers WHERE customer_id = $1", customer_id)
    return result


async def merged_ids(conn: asyncpg.Connection, survivor_id: str) -> list[str]:
    rows = await conn.fetch("SELECT customer_id FROM customers WHERE merged_into = $1 ORDER BY merged_at", survivor_id)
    return [r["customer_id"] for r in rows]


async def forget_customers(conn: asyncpg.Connection, customer_ids: Sequence[str], at: datetime) -> None:
    """Erasure: their identifiers and names go (a later contact with the same email is a new customer)."""
    await conn.execute("DELETE FROM customer_identifiers WHERE customer_id = ANY($1::text[])", list(customer_ids))
    await conn.execute(
        "DELETE FROM merge_suggestions WHERE customer_a = ANY($1::text[]) OR customer_b = ANY($1::text[])",
        list(customer_ids),
    )
    await conn.execute("DELETE FROM customer_name_tokens WHERE customer_id = ANY($1::text[])", list(customer_ids))
    await conn.execute("DELETE FROM customer_names WHERE customer_id = ANY($1::text[])", list(customer_ids))
    await conn.execute("UPDATE customers SET erased_at = $2 WHERE customer_id = ANY($1::text[])", customer_ids, at)


async def survivor_of(conn: asyncpg.Connection, customer_id: str) -> str | None:
    """None for an unknown id; the id itself for a live customer; the survivor for a merged one."""
    row = await conn.fetchrow("SELECT merged_into FROM customers WHERE customer_id = $1", customer_id)
    if row is None:
        return None
    return row["merged_into"] or customer_id


# --- consent and preferences -------------------------------------------------------------------

ALL_CHANNELS = "*"


async def consent(conn: asyncpg.Connection, customer_id: str) -> dict[tuple[str, str], bool]:
    rows = await conn.fetch(
        "SELECT purpose, channel, granted FROM customer_consent WHERE customer_id = $1", customer_id
    )
    return {(r["purpose"], r["channel"]): r["granted"] for r in rows}


async def consent_rows(conn: asyncpg.Connection, customer_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT purpose, channel, granted, updated_at FROM customer_consent WHERE customer_id = $1"
        " ORDER BY purpose, channel",
        customer_id,
    )
    return [
        {
            "purpose": r["purpose"],
            "channel": None if r["channel"] == ALL_CHANNELS else r["channel"],
            "granted": r["granted"],
            "updated_at": r["updated_at"].isoformat(),
        }
        for r in rows
    ]


async def set_consent(
    conn: asyncpg.Connection, customer_id: str, changes: dict[tuple[str, str], bool], at: datetime
) -> None:
    await conn.executemany(
        "INSERT INTO customer_consent (customer_id, purpose, channel, granted, updated_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id, purpose, channel)"
        " DO UPDATE SET granted = EXCLUDED.granted, updated_at = EXCLUDED.updated_at",
        [(customer_id, purpose, channel, granted, at) for (purpose, channel), granted in changes.items()],
    )


async def preferences(conn: asyncpg.Connection, customer_id: str) -> Preferences:
    stored = await conn.fetchval("SELECT preferences FROM customer_preferences WHERE customer_id = $1", customer_id)
    return Preferences.model_validate(stored) if stored else Preferences()


async def set_preferences(conn: asyncpg.Connection, customer_id: str, prefs: Preferences, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO customer_preferences (customer_id, preferences, updated_at) VALUES ($1, $2::jsonb, $3)"
        " ON CONFLICT (customer_id) DO UPDATE SET preferences = EXCLUDED.preferences,"
        " updated_at = EXCLUDED.updated_at",
        customer_id,
        prefs.model_dump(mode="json"),
        at,
    )


# --- the display name --------------------------------------------------------------------------


async def sealed_name(conn: asyncpg.Connection, customer_id: str) -> str | None:
    """The name's token (sealed under the customer's own data key), or None when there is no name."""
    result: str | None = await conn.fetchval("SELECT sealed FROM customer_names WHERE customer_id = $1", customer_id)
    return result


async def set_name(
    conn: asyncpg.Connection, vault: Vault, customer_id: str, name: str | None, data_key: bytes, at: datetime
) -> None:
    """Replace the name: sealed value plus one blind index per word; None removes both."""
    await conn.execute("DELETE FROM customer_name_tokens WHERE customer_id = $1", customer_id)
    if name is None:
        await conn.execute("DELETE FROM customer_names WHERE customer_id = $1", customer_id)
        return
    await conn.execute(
        "INSERT INTO customer_names (customer_id, sealed, updated_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (customer_id) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = EXCLUDED.updated_at",
        customer_id,
        crypto.encrypt_text(data_key, f"{customer_id}|{NAME_FIELD}", name),
        at,
    )
    await conn.execute(
        "INSERT INTO customer_name_tokens (token, customer_id) SELECT t, $2 FROM unnest($1::text[]) AS t",
        [vault.name_index(t) for t in name_tokens(name)],
        customer_id,
    )


async def customer(conn: asyncpg.Connection, customer_id: str) -> dict[str, Any] | None:
    """The profile; identifiers still sealed, as (kind, channel, token, key owner, trust) in sealed_identifiers,
    the name as its token in sealed_name."""
    row = await conn.fetchrow(
        "SELECT customer_id, created_at, erased_at FROM customers WHERE customer_id = $1 AND merged_into IS NULL",
        customer_id,
    )
    if row is None:
        return None
    idents = await conn.fetch(
        "SELECT kind, channel, sealed, sealed_by, trust FROM customer_identifiers WHERE customer_id = $1"
        " ORDER BY kind, channel, value",
        customer_id,
    )
    return {
        "customer_id": customer_id,
        "created_at": row["created_at"].isoformat(),
        "erased_at": row["erased_at"].isoformat() if row["erased_at"] else None,
        "sealed_identifiers": [
            (r["kind"], r["channel"] or None, r["sealed"], r["sealed_by"], r["trust"]) for r in idents
        ],
        "sealed_name": await sealed_name(conn, customer_id),
        "merged_ids": await merged_ids(conn, customer_id),
        "preferences": (await preferences(conn, customer_id)).model_dump(mode="json"),
        "consent": await consent_rows(conn, customer_id),
    }


# --- idempotency ---------------------------------------------------------------------------------


async def claim_keys(conn: asyncpg.Connection, keys: dict[str, str]) -> dict[str, asyncpg.Record]:
    """Claim key -> request hash; return the rows of keys that were already there.

    A key claimed by a transaction still in flight makes this wait until that one commits (then
    its answer is returned) or rolls back (then the key is ours).
    """
    if not keys:
        return {}
    names = sorted(keys)
    claimed = await conn.fetch(
        "INSERT INTO idempotency_keys (key, request_hash) SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT (key) DO NOTHING RETURNING key",
        names,
        [keys[k] for k in names],
    )
    ours = {r["key"] for r in claimed}
    taken = [k for k in names if k not in ours]
    if not taken:
        return {}
    rows = await conn.fetch(
        "SELECT key, request_hash, response FROM idempotency_keys WHERE key = ANY($1::text[])", taken
    )
    return {r["key"]: r for r in rows}


async def answer_keys(conn: asyncpg.Connection, answers: dict[str, Any]) -> None:
    if answers:
        names = sorted(answers)
        await conn.execute(
            "UPDATE idempotency_keys k SET response = a.response::jsonb"
            " FROM unnest($1::text[], $2::text[]) AS a(key, response) WHERE k.key = a.key",
            names,
            [json_text(answers[k]) for k in names],
        )


async def find_customers(
    conn: asyncpg.Connection,
    vault: Vault,
    idents: list[Ident],
    id_prefix: str | None,
    limit: int,
    name_words: Sequence[str] = (),
) -> list[str]:
    """Live customers with one of these identifiers (by blind index), whose name has every one of
    name_words (normalised, see domain.name_tokens), or whose id starts with id_prefix."""
    found: list[str] = []
    if idents:
        rows = await conn.fetch(
            "SELECT DISTINCT customer_id FROM customer_identifiers WHERE value = ANY($1::text[])",
            [vault.index(i) for i in idents],
        )
        found.extend(r["customer_id"] for r in rows)
    if name_words:
        # A merged customer's name still finds them, under the survivor's id.
        rows = await conn.fetch(
            "SELECT coalesce(c.merged_into, c.customer_id) AS customer_id FROM customer_name_tokens t"
            " JOIN customers c ON c.customer_id = t.customer_id WHERE t.token = ANY($1::text[])"
            " GROUP BY c.customer_id HAVING count(*) = $2 ORDER BY 1 LIMIT $3",
            [vault.name_index(w) for w in set(name_words)],
            len(set(name_words)),
            limit,
        )
        found.extend(r["customer_id"] for r in rows if r["customer_id"] not in found)
    if id_prefix:
        rows = await conn.fetch(
            "SELECT customer_id FROM customers WHERE customer_id LIKE $1 || '%' AND merged_into IS NULL"
            " ORDER BY customer_id LIMIT $2",
            id_prefix,
            limit,
        )
        found.extend(r["customer_id"] for r in rows if r["customer_id"] not in found)
    return found[:limit]


async def forget_keys_before(conn: asyncpg.Connection, cutoff: datetime) -> int:
    """Delete idempotency keys older than cutoff; return how many."""
    status = await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1", cutoff)
    return int(status.split()[-1])
