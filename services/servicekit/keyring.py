"""Data keys where a service needs them: fetched from the key vault (intake owns it), cached briefly.

Only intake's database holds data keys (wrapped under the master key), so erasing a customer
destroys the one copy. The other services ask intake over HTTP with a key of scope `keys` and
keep what they get in memory for KEY_CACHE_SECONDS; the `crm.customer.erased.v1` event drops it
at once in the instance that consumes it (other instances forget it when the entry expires).
"""

import base64
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventkit import crypto

from contracts.events import CUSTOMER_ERASED


class KeysUnavailable(Exception):
    """The vault did not answer: reading sealed data must wait (503), never show it as erased."""


class KeyErased(Exception):
    """New personal data for a customer whose key was destroyed: refuse it."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id} was erased")
        self.customer_id = customer_id


class KeySource(Protocol):
    async def lookup(self, customer_ids: Sequence[str], create: bool) -> tuple[dict[str, bytes], set[str]]:
        """(keys found or created, ids that were erased). Unknown ids without `create` are in neither."""
        ...


class HttpKeySource:
    """intake's POST /internal/v1/data-keys:lookup."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 5.0) -> None:
        self._url = base_url.rstrip("/") + "/internal/v1/data-keys:lookup"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_s)

    async def lookup(self, customer_ids: Sequence[str], create: bool) -> tuple[dict[str, bytes], set[str]]:
        try:
            r = await self._client.post(self._url, json={"customer_ids": list(customer_ids), "create": create})
        except httpx.HTTPError as exc:
            raise KeysUnavailable(f"key vault not reachable: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise KeysUnavailable(f"key vault answered {r.status_code}")
        body: dict[str, Any] = r.json()
        keys = {cid: base64.b64decode(k) for cid, k in body["keys"].items()}
        return keys, set(body["erased"])

    async def close(self) -> None:
        await self._client.aclose()


class MemoryKeySource:
    """Data keys in a dict, for tests of code that seals without an intake to ask."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.erased: set[str] = set()

    async def lookup(self, customer_ids: Sequence[str], create: bool) -> tuple[dict[str, bytes], set[str]]:
        if create:
            for cid in customer_ids:
                if cid not in self.erased:
                    self.stored.setdefault(cid, crypto.new_data_key())
        found = {cid: self.stored[cid] for cid in customer_ids if cid in self.stored}
        return found, {cid for cid in customer_ids if cid in self.erased}

    def erase(self, customer_id: str) -> None:
        self.stored.pop(customer_id, None)
        self.erased.add(customer_id)


class KeyRing:
    def __init__(self, source: KeySource, ttl_s: float = 60.0, max_entries: int = 100_000) -> None:
        self.source = source
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, bytes | None]] = {}  # None: erased

    async def keys(self, customer_ids: Collection[str], create: bool = False) -> dict[str, bytes | None]:
        """Owner -> data key, or None for an erased (or never keyed) customer."""
        now = time.monotonic()
        out: dict[str, bytes | None] = {}
        missing: list[str] = []
        for cid in set(customer_ids):
            hit = self._cache.get(cid)
            if hit is not None and now - hit[0] < self._ttl_s:
                out[cid] = hit[1]
            else:
                missing.append(cid)
        if missing:
            found, erased = await self.source.lookup(sorted(missing), create)
            if len(self._cache) + len(missing) > self._max_entries:
                self._cache.clear()  # crude but bounded; keys are cheap to fetch again
            for cid in missing:
                if cid in found:
                    self._cache[cid] = (now, found[cid])
                elif cid in erased:
                    self._cache[cid] = (now, None)
                out[cid] = found.get(cid)
        return out

    async def key_for_writing(self, customer_id: str) -> bytes:
        """The customer's data key, made if it does not exist yet; KeyErased if it was destroyed."""
        key = (await self.keys([customer_id], create=True)).get(customer_id)
        if key is None:
            raise KeyErased(customer_id)
        return key

    def forget(self, customer_ids: Collection[str]) -> None:
        for cid in customer_ids:
            self._cache.pop(cid, None)

    async def unseal(self, datas: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Event data as written, sealed fields restored (or "[erased]")."""
        owners = {o for d in datas if (o := crypto.sealed_by(d)) is not None}
        keys = await self.keys(owners) if owners else {}
        # One cipher per owner for all of them (a page is mostly one customer's events).
        ciphers = {owner: None if key is None else AESGCM(key) for owner, key in keys.items()}
        return [crypto.unseal(d, ciphers) for d in datas]

    async def unseal_items(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Timeline items ({..., "data": {...}}) with their data unsealed."""
        datas = await self.unseal([i["data"] for i in items])
        return [{**item, "data": data} for item, data in zip(items, datas, strict=True)]


def remote_keyring(settings: Any) -> KeyRing:
    """A KeyRing over intake's vault, as the settings say (KEY_SERVICE_URL, KEY_SERVICE_API_KEY)."""
    api_key = settings.key_service_api_key or settings.auth_bootstrap_admin_key
    return KeyRing(HttpKeySource(settings.key_service_url, api_key), ttl_s=settings.key_cache_seconds)


ERASED_TYPE = CUSTOMER_ERASED


class ErasedKeyEviction:
    """Every service: drop an erased customer's cached data keys as soon as the event arrives."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    async def apply(self, conn: Any, events: Sequence[Any]) -> None:
        for e in events:
            if e.type == ERASED_TYPE:
                self.ring.forget(e.data.get("erased_ids", []))
