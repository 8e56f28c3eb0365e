"""Signed events: what a service acts on for authorization is not taken on the broker's word.

Anyone who can write to a topic could otherwise forge an event that grants access (docs/product.md §14).
The producer signs such events with an Ed25519 private key; every consumer verifies them
against the public keys it is configured with, and refuses (dead-letters) what fails.

- The signature covers a canonical encoding of the event: id, type, source, subject, time
  (format_time) and the data without the two signature fields, as JSON with sorted keys and no
  whitespace. The signature and the id of the signing key travel in the data
  (`signature`, `signing_key_id`), so the envelope and the topics stay as they are.
- Keys are raw 32-byte Ed25519 keys in base64. Rotation: add the new public key to every
  consumer, sign with the new private key, and drop the old public key once nothing signed
  with it needs to be read again.

Which event types are signed is the caller's to say (contracts name them); nothing here knows
an event name.
"""

import argparse
import base64
import binascii
import logging
import sys
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eventkit.envelope import DecodeError, Envelope, format_time

log = logging.getLogger(__name__)
SIGNATURE = "signature"
SIGNING_KEY_ID = "signing_key_id"


def signed_bytes(event: Envelope) -> bytes:
    """The canonical encoding the signature covers."""
    data = {k: v for k, v in event.data.items() if k not in (SIGNATURE, SIGNING_KEY_ID)}
    whole = {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": format_time(event.time),
        "data": data,
    }
    return orjson.dumps(whole, option=orjson.OPT_SORT_KEYS)


def _b64decode(text: str) -> bytes:
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def generate_key_pair() -> tuple[str, str]:
    """(private key, public key), raw Ed25519 in base64: for development stacks and tests."""
    private = Ed25519PrivateKey.generate()
    return _b64encode(private.private_bytes_raw()), _b64encode(private.public_key().public_bytes_raw())


def public_key_of(private_key: str) -> str:
    return _b64encode(load_private_key(private_key).public_key().public_bytes_raw())


def load_private_key(text: str) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(_b64decode(text))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not a raw Ed25519 private key in base64 (32 bytes)") from exc


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(_b64decode(text))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not a raw Ed25519 public key in base64 (32 bytes)") from exc


class EventSigner:
    def __init__(self, key_id: str, private_key: str) -> None:
        if not key_id:
            raise ValueError("a signing key needs an id")
        self.key_id = key_id
        self._key = load_private_key(private_key)

    def sign(self, event: Envelope) -> Envelope:
        """The event with signature and signing_key_id added to its data."""
        signature = self._key.sign(signed_bytes(event))
        data: dict[str, Any] = {**event.data, SIGNATURE: _b64encode(signature), SIGNING_KEY_ID: self.key_id}
        return replace(event, data=data)


class EventVerifier:
    """A consumer check: raises DecodeError for an event of `types` whose signature does not
    verify under one of `public_keys` (key id -> base64 public key); other types pass."""

    def __init__(self, public_keys: Mapping[str, str], types: Collection[str]) -> None:
        self._keys = {key_id: load_public_key(text) for key_id, text in public_keys.items()}
        self._types = frozenset(types)

    def __call__(self, event: Envelope) -> None:
        if event.type not in self._types:
            return
        signature, key_id = event.data.get(SIGNATURE), event.data.get(SIGNING_KEY_ID)
        if not isinstance(signature, str) or not isinstance(key_id, str):
            self._refuse(event, "unsigned", "the event carries no signature")
        key = self._keys.get(key_id)
        if key is None:
            self._refuse(event, "unknown_signing_key", f"signing key {key_id!r} is not among the trusted public keys")
        try:
            key.verify(_b64decode(signature), signed_bytes(event))
        except (InvalidSignature, ValueError, binascii.Error):
            self._refuse(event, "bad_signature", f"the signature does not verify under key {key_id!r}")

    @staticmethod
    def _refuse(event: Envelope, reason: str, detail: str) -> NoReturn:
        # Ids and the reason only: the data may hold a key's hash, never logged.
        log.warning("refused %s %s: %s", event.type, event.id, reason)
        raise DecodeError(reason, detail)


def main(argv: list[str] | None = None) -> int:
    """`python -m eventkit.signing [--key-id ID] [--prefix CRM_]`: a new signing key pair, printed
    as environment settings (intake's private key, and the public keys every service trusts)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--key-id", default=datetime.now(UTC).strftime("%Y-%m"), help="default: this month")
    parser.add_argument("--prefix", default="", help="before each name, e.g. CRM_ for docker-compose's .env")
    args = parser.parse_args(argv)
    private, public = generate_key_pair()
    print(f"{args.prefix}AUTH_EVENT_SIGNING_KEY_ID={args.key_id}")
    print(f"{args.prefix}AUTH_EVENT_SIGNING_KEY={private}")
    print(f"{args.prefix}AUTH_EVENT_PUBLIC_KEYS={orjson.dumps({args.key_id: public}).decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
