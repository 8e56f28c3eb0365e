"""The data key vault (docs/product.md §9): one random key per customer, wrapped under the master key.

intake is the only service that stores data keys; the others fetch them over HTTP
(/internal/v1/data-keys:lookup, scope `keys`) and keep them in memory briefly. Erasure destroys
the wrapped key, so every sealed copy of the customer's personal data becomes unreadable.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime

import asyncpg
from eventkit import crypto

from intake.domain import Ident

IDENTIFIER_FIELD = "identifier"  # the sealed `customer_identifiers.sealed` column's place
NAME_FIELD = "name"  # the sealed `customer_names.sealed` column's place


class Vault:
    def __init__(self, master_key: bytes) -> None:
        self._wrapping = crypto.derive_key(master_key, "crm data-key wrapping v1")
        self._index = crypto.derive_key(master_key, "crm identifier blind index v1")
        self._name_index = crypto.derive_key(master_key, "crm name token blind index v1")

    def index(self, ident: Ident) -> str:
        """What intake stores and looks up instead of the identifier itself."""
        return crypto.blind_index(self._index, ident.key)

    def name_index(self, token: str) -> str:
        """What intake stores and looks up instead of one normalised word of a name."""
        return crypto.blind_index(self._name_index, token)

    async def keys(
        self,
        conn: asyncpg.Connection,
        customer_ids: Collection[str],
        create: bool,
        stored: Mapping[str, bytes | None] | None = None,
    ) -> tuple[dict[str, bytes], set[str]]:
        """(data keys, erased ids); with `create`, ids without a key get one now. `stored` holds
        key rows already read in this transaction (customer id -> wrapped key, None if erased);
        only the other ids are looked up."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}, set()
        stored = stored or {}
        rows: list[tuple[str, bytes | None]] = [(cid, stored[cid]) for cid in ids if cid in stored]
        if unknown := [cid for cid in ids if cid not in stored]:
            rows += [
                (r["customer_id"], r["wrapped"])
                for r in await conn.fetch(
                    "SELECT customer_id, wrapped FROM customer_keys WHERE customer_id = ANY($1::text[])", unknown
                )
            ]
        found: dict[str, bytes] = {}
        erased: set[str] = set()
        for cid, wrapped in rows:
            if wrapped is None:
                erased.add(cid)
            else:
                found[cid] = crypto.unwrap_key(self._wrapping, cid, wrapped)
        missing = [cid for cid in ids if cid not in found and cid not in erased]
        if create and missing:
            await self.store_new(conn, {cid: crypto.new_data_key() for cid in missing})
            # Another request may have made some of them first: read back what is stored.
            more, more_erased = await self.keys(conn, missing, create=False)
            found.update(more)
            erased |= more_erased
        return found, erased

    async def store_new(self, conn: asyncpg.Connection, keys: dict[str, bytes]) -> None:
        if keys:
            await conn.execute(
                "INSERT INTO customer_keys (customer_id, wrapped) SELECT * FROM unnest($1::text[], $2::bytea[])"
                " ON CONFLICT (customer_id) DO NOTHING",
                list(keys),
                [crypto.wrap_key(self._wrapping, cid, k) for cid, k in keys.items()],
            )

    async def destroy(self, conn: asyncpg.Connection, customer_ids: Sequence[str], at: datetime) -> None:
        """Crypto-shredding: the wrapped keys are gone; the rows say when."""
        await conn.execute(
            "INSERT INTO customer_keys (customer_id, wrapped, erased_at)"
            " SELECT id, NULL, $2 FROM unnest($1::text[]) AS id"
            " ON CONFLICT (customer_id) DO UPDATE SET wrapped = NULL, erased_at = EXCLUDED.erased_at",
            list(customer_ids),
            at,
        )


class VaultKeySource:
    """The KeySource of intake's own KeyRing: the vault, read through the service's pool."""

    def __init__(self, pool_getter: Callable[[], asyncpg.Pool], vault: Vault) -> None:
        self._pool = pool_getter
        self.vault = vault

    async def lookup(self, customer_ids: Sequence[str], create: bool) -> tuple[dict[str, bytes], set[str]]:
        async with self._pool().acquire() as conn:
            return await self.vault.keys(conn, customer_ids, create)
