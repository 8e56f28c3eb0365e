"""Open the sealed personal fields of an event, with data keys fetched from intake.

A personal field (message content, an email, a name) travels as the marker "[sealed]" in its
place; its ciphertext is in `data["sealed"] = {"key": <customer id>, "fields": {<path>: <token>}}`.
A token is "v1." + base64url(12-byte nonce + AES-256-GCM ciphertext and tag) under that
customer's data key, with the associated data "<customer id>|<path>", so it cannot be moved to
another customer or field. Data keys come from intake's `POST /internal/v1/data-keys:lookup`,
which needs an API key with scope `keys` (or `admin`). Erasing a customer destroys their key:
the lookup then lists them as erased, and their fields read "[erased]".

AES-GCM is not in the standard library: this module needs the `cryptography` package, installed
with the `subscriber` extra (pip install "crm-client[subscriber]"). It is imported when the first
field is opened, so that `crm_client` itself installs with httpx and pydantic alone.
"""

import base64
import binascii
import dataclasses
import time
from collections.abc import Callable, Collection
from typing import Any

import httpx

from crm_client.events import Event, typed_data

__all__ = ["ERASED", "SEALED", "UnsealError", "Unsealer"]

SEALED = "[sealed]"
ERASED = "[erased]"
ERASED_TYPE = "crm.customer.erased.v1"
LOOKUP_PATH = "/internal/v1/data-keys:lookup"
_TOKEN_PREFIX = "v1."
_NONCE_BYTES = 12


class UnsealError(Exception):
    """The data keys could not be had: the key lacks scope `keys` (status 403), is unknown (401),
    or intake did not answer (status None, or 5xx). The fields are not shown as erased: nothing
    says they are; try again, or fix the key."""

    def __init__(self, message: str, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error  # the API's machine-readable `error` code, when it gave one


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise ImportError(
            'crm_client.unseal needs the cryptography package: pip install "crm-client[subscriber]"'
        ) from exc
    return AESGCM


def open_token(cipher: Any, owner: str, path: str, token: str) -> str:
    """One field's plaintext; ERASED for a token that does not open (not ours, or tampered with)."""
    from cryptography.exceptions import InvalidTag  # here: only once a cipher exists

    if not token.startswith(_TOKEN_PREFIX):
        return ERASED
    try:
        blob = base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX) :])
        plain: bytes = cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], f"{owner}|{path}".encode())
        return plain.decode()
    except (binascii.Error, ValueError, InvalidTag):
        return ERASED


def _path(dotted: str) -> list[str]:
    """A dotted path split back; "." and "~" inside keys travel escaped as ~1 and ~0."""
    return [part.replace("~1", ".").replace("~0", "~") for part in dotted.split(".")]


def _set(data: Any, path: list[str], value: str) -> None:
    for part in path[:-1]:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(path[-1])] = value
    else:
        data[path[-1]] = value


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def unseal_data(data: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """A copy of `data` with its sealed fields opened under `key` (the owner's data key), or
    ERASED in each when `key` is None (the customer was erased)."""
    sealed = data.get("sealed")
    if not isinstance(sealed, dict):
        return dict(data)
    out: dict[str, Any] = _copy(data)
    del out["sealed"]
    owner = str(sealed.get("key", ""))
    cipher = _aesgcm()(key) if key is not None else None
    for dotted, token in (sealed.get("fields") or {}).items():
        plain = open_token(cipher, owner, dotted, token) if cipher is not None else ERASED
        try:
            _set(out, _path(dotted), plain)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a path that does not fit the data: nothing to restore there
    return out


class _Miss:
    """Not in the cache (or expired); None in the cache means erased."""


_MISS = _Miss()


class Unsealer:
    """Opens events' sealed fields; data keys are cached for `key_cache_seconds` (5 minutes).

    `unseal(event)` is synchronous (httpx.Client); `unseal_async(event)` is the same for an
    asyncio consumer (httpx.AsyncClient), so that a key lookup does not block the event loop.
    Both share one cache. An erased customer is cached as erased too; a `crm.customer.erased.v1`
    event passed through either method drops its ids from the cache at once. Close with
    `close()` / `aclose()`, or use the Unsealer as a (async) context manager."""

    def __init__(
        self,
        intake_url: str,
        api_key: str,
        *,
        key_cache_seconds: float = 300.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = intake_url.rstrip("/") + LOOKUP_PATH
        self.key_cache_seconds = key_cache_seconds
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[str, tuple[float, bytes | None]] = {}  # owner -> (fetched at, key; None: erased)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    # --- the two ways in --------------------------------------------------------------------

    def unseal(self, event: Event) -> Event:
        """The event with its personal fields opened (or "[erased]"); raises UnsealError."""
        self._note(event)
        owner = self._owner(event)
        if owner is None:
            return event
        key = self._cached(owner)
        if isinstance(key, _Miss):
            if self._client is None:
                self._client = httpx.Client(headers=self._headers, timeout=self._timeout)
            try:
                response = self._client.post(self.url, json={"customer_ids": [owner], "create": False})
            except httpx.HTTPError as exc:
                raise UnsealError(f"intake not reachable: {type(exc).__name__}") from exc
            key = self._store(owner, response)
        return _opened(event, key)

    async def unseal_async(self, event: Event) -> Event:
        """As `unseal`, for asyncio code."""
        self._note(event)
        owner = self._owner(event)
        if owner is None:
            return event
        key = self._cached(owner)
        if isinstance(key, _Miss):
            if self._aclient is None:
                self._aclient = httpx.AsyncClient(headers=self._headers, timeout=self._timeout)
            try:
                response = await self._aclient.post(self.url, json={"customer_ids": [owner], "create": False})
            except httpx.HTTPError as exc:
                raise UnsealError(f"intake not reachable: {type(exc).__name__}") from exc
            key = self._store(owner, response)
        return _opened(event, key)

    def forget(self, customer_ids: Collection[str]) -> None:
        """Drop cached keys, so the next event of these customers asks intake again."""
        for cid in customer_ids:
            self._cache.pop(cid, None)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        self.close()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    def __enter__(self) -> "Unsealer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "Unsealer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- the shared part ----------------------------------------------------------------------

    def _note(self, event: Event) -> None:
        if event.type == ERASED_TYPE:
            ids = event.raw_data.get("erased_ids")
            self.forget([str(i) for i in ids] if isinstance(ids, list) else [event.subject])

    @staticmethod
    def _owner(event: Event) -> str | None:
        sealed = event.raw_data.get("sealed")
        if not isinstance(sealed, dict) or not sealed.get("key"):
            return None
        return str(sealed["key"])

    def _cached(self, owner: str) -> bytes | _Miss | None:
        hit = self._cache.get(owner)
        if hit is not None and self._clock() - hit[0] < self.key_cache_seconds:
            return hit[1]
        return _MISS

    def _store(self, owner: str, response: httpx.Response) -> bytes | None:
        if response.status_code != 200:
            error: str | None = None
            message = f"intake answered {response.status_code} to the data key lookup"
            try:
                body = response.json()
                error, message = body.get("error"), body.get("message") or message
            except ValueError:
                pass
            if response.status_code == 403:
                message += " (the API key needs scope keys)"
            raise UnsealError(message, response.status_code, error)
        body = response.json()
        keys: dict[str, str] = body.get("keys", {})
        # An owner neither found nor erased has no key (never had one): nothing can open its fields.
        key = base64.b64decode(keys[owner]) if owner in keys else None
        self._cache[owner] = (self._clock(), key)
        return key


def _opened(event: Event, key: bytes | None) -> Event:
    data = unseal_data(event.raw_data, key)
    return dataclasses.replace(event, raw_data=data, data=typed_data(event.type, data))
