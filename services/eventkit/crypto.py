"""Per-customer encryption of personal fields (docs/product.md §9): seal, unseal, wrap keys, blind indexes.

Each customer has a random 256-bit data key. A personal field of an event (message content, an
email, a note) is sealed with AES-256-GCM under the data key of the customer it belongs to: the
field keeps its place and type but holds the marker "[sealed]", and the ciphertext goes to
`data["sealed"] = {"key": <customer id of the key>, "fields": {<path>: <token>}}`. Destroying the
data key (crypto-shredding) makes every copy of those fields unreadable at once: in the event
stores, the topics, the projections and any backup. Reading with the key gone shows "[erased]".

Data keys are stored wrapped (AES-GCM) under a master key from settings; lookups by identifier
use a blind index, an HMAC of the normalised identifier under a key derived from the master key.
"""

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from eventkit import random_bytes

SEALED = "[sealed]"
ERASED = "[erased]"
_TOKEN_PREFIX = "v1."
_NONCE_BYTES = 12


class CryptoError(Exception):
    """A token or wrapped key that does not decrypt: tampered with, or under another key."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def parse_master_key(text: str) -> bytes:
    """The master key setting: 32 bytes, base64 (standard or URL-safe)."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("MASTER_KEY must be base64") from exc
    if len(raw) != 32:
        raise ValueError(f"MASTER_KEY must be 32 bytes of base64, not {len(raw)} bytes")
    return raw


def derive_key(master: bytes, purpose: str) -> bytes:
    """A separate key per purpose (wrapping, blind index), so one never doubles as the other."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(master)


def _encrypt(key: bytes | AESGCM, aad: str, plaintext: bytes) -> bytes:
    """`key` may be the cipher made from it, as in _decrypt: making one costs more than using it
    (~0.9 against ~0.6 µs for a short field), and an event seals several fields under one key."""
    nonce = random_bytes.random_bytes(_NONCE_BYTES)
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    return nonce + cipher.encrypt(nonce, plaintext, aad.encode())


def _decrypt(key: bytes | AESGCM, aad: str, blob: bytes) -> bytes:
    """`key` may be the cipher made from it: reading a page of one customer's events made one
    per field, a third of the cost of opening a field."""
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    try:
        return cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad.encode())
    except (InvalidTag, ValueError) as exc:
        raise CryptoError("does not decrypt under this key") from exc


def wrap_key(wrapping_key: bytes, customer_id: str, data_key: bytes) -> bytes:
    return _encrypt(wrapping_key, f"data-key|{customer_id}", data_key)


def unwrap_key(wrapping_key: bytes, customer_id: str, wrapped: bytes) -> bytes:
    return _decrypt(wrapping_key, f"data-key|{customer_id}", wrapped)


def encrypt_text(data_key: bytes | AESGCM, aad: str, text: str) -> str:
    """A printable token; `aad` binds it to its place (customer and field), so it cannot be moved."""
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(_encrypt(data_key, aad, text.encode())).decode()


def decrypt_text(data_key: bytes | AESGCM, aad: str, token: str) -> str:
    if not token.startswith(_TOKEN_PREFIX):
        raise CryptoError("not a sealed token")
    try:
        blob = base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX) :])
    except (binascii.Error, ValueError) as exc:
        raise CryptoError("not a sealed token") from exc
    return _decrypt(data_key, aad, blob).decode()


def blind_index(index_key: bytes, text: str) -> str:
    """Equal inputs give equal outputs, so lookups work; the input cannot be read back."""
    return hmac.new(index_key, text.encode(), hashlib.sha256).hexdigest()


# --- sealing fields of event data ----------------------------------------------------------------


def _expand(data: Any, pattern: list[str], prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    if not pattern:
        yield prefix
        return
    head, rest = pattern[0], pattern[1:]
    if head == "**":  # every leaf below, at any depth (free-form JSON such as metadata)
        if isinstance(data, dict):
            for key, item in data.items():
                yield from _expand(item, pattern, (*prefix, key))
        elif isinstance(data, list):
            for i, item in enumerate(data):
                yield from _expand(item, pattern, (*prefix, str(i)))
        else:
            yield prefix
    elif head == "*" and isinstance(data, list):
        for i, item in enumerate(data):
            yield from _expand(item, rest, (*prefix, str(i)))
    elif isinstance(data, dict) and head in data:
        yield from _expand(data[head], rest, (*prefix, head))


def _dotted(path: tuple[str, ...]) -> str:
    """The path as one string; "." and "~" inside free-form keys are escaped (~1, ~0), so it splits back."""
    return ".".join(part.replace("~", "~0").replace(".", "~1") for part in path)


def _undotted(dotted: str) -> tuple[str, ...]:
    return tuple(part.replace("~1", ".").replace("~0", "~") for part in dotted.split("."))


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _set(data: Any, path: tuple[str, ...], value: Any) -> None:
    parent = _get(data, path[:-1])
    if isinstance(parent, list):
        parent[int(path[-1])] = value
    else:
        parent[path[-1]] = value


def _set_copying(data: dict[str, Any], path: tuple[str, ...], value: Any, copied: set[int]) -> None:
    """_set on `data` (a copy already) that first copies each container on the way that is not in
    `copied` (ids of the copies made so far): what the caller passed in stays as it was, and only
    what leads to a sealed field is copied, not the whole data."""
    parent: Any = data
    for part in path[:-1]:
        index: int | str = int(part) if isinstance(parent, list) else part
        child = parent[index]
        if id(child) not in copied:
            if isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise TypeError("the path runs through a value that is not a container")
            copied.add(id(child))
            parent[index] = child
        parent = child
    if isinstance(parent, list):
        parent[int(path[-1])] = value
    else:
        parent[path[-1]] = value


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def seal(data: Mapping[str, Any], patterns: Iterable[str], owner: str, data_key: bytes) -> dict[str, Any]:
    """A copy of `data` with the string fields matching `patterns` ("content", "identifiers.*.value",
    "metadata.**" for every string below metadata) sealed under `owner`'s data key; a pattern
    "!<path>" keeps that one path readable ("!metadata.score"). Fields that are absent or not
    strings stay as they are."""
    out: dict[str, Any] = _copy(dict(data))
    if out.get("sealed", "") is None:
        del out["sealed"]  # a model's empty default, not worth carrying
    readable = {p[1:] for p in patterns if p.startswith("!")}
    fields: dict[str, str] = {}
    cipher: AESGCM | None = None  # made at the first field to seal, for all of them
    for pattern in patterns:
        if pattern.startswith("!"):
            continue
        for path in _expand(out, pattern.split(".")):
            value = _get(out, path)
            dotted = _dotted(path)
            if isinstance(value, str) and value != SEALED and dotted not in readable:
                cipher = cipher or AESGCM(data_key)
                fields[dotted] = encrypt_text(cipher, f"{owner}|{dotted}", value)
                _set(out, path, SEALED)
    if fields:
        out["sealed"] = {"key": owner, "fields": fields}
    return out


def sealed_by(data: Mapping[str, Any]) -> str | None:
    """The customer whose data key sealed this data, or None if nothing in it is sealed."""
    sealed = data.get("sealed")
    return sealed.get("key") if isinstance(sealed, dict) else None


def unseal(data: Mapping[str, Any], keys: Mapping[str, bytes | AESGCM | None]) -> dict[str, Any]:
    """A copy with sealed fields restored; "[erased]" where the key is gone or the token is bad.

    `keys` maps a key owner to its data key (or the cipher made from it, see KeyRing.unseal),
    None for an erased customer; an owner missing from `keys` also reads as erased, since a key
    that was never there cannot be used either. Only the containers leading to a sealed field
    are copied; the rest is shared with `data`, so treat both as read-only."""
    owner = sealed_by(data)
    if owner is None:
        return dict(data)
    out = dict(data)
    sealed = out.pop("sealed")
    key = keys.get(owner)
    cipher = None if key is None else key if isinstance(key, AESGCM) else AESGCM(key)
    copied: set[int] = set()
    for dotted, token in sealed.get("fields", {}).items():
        path = _undotted(dotted) if "~" in dotted else tuple(dotted.split("."))
        try:
            plain = decrypt_text(cipher, f"{owner}|{dotted}", token) if cipher is not None else ERASED
        except CryptoError:
            plain = ERASED
        try:
            _set_copying(out, path, plain, copied)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a path that does not fit the data: nothing to restore there
    return out


def open_token(token: str | None, owner: str, field: str, keys: Mapping[str, bytes | None]) -> str | None:
    """One sealed column value (projections store tokens, not plaintext); "[erased]" without a key."""
    if token is None:
        return None
    key = keys.get(owner)
    if key is None:
        return ERASED
    try:
        return decrypt_text(key, f"{owner}|{field}", token)
    except CryptoError:
        return ERASED
