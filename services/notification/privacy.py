"""docs/product.md §9 in notification: a customer's addresses and messages are kept sealed under their data key.

- Contacts: each address is a token with AAD "<owner>|notification_contacts.value", owner being
  the customer whose data key sealed it (the key intake sealed the identifier with), plus a
  lookup (HMAC under a key derived from the same data key) that keeps one row per address.
- Customer messages: address, subject and body are tokens with AAD "<owner>|notifications.<column>"
  under the key of `notifications.sealed_by`. They are opened only to decide (choose the address)
  and to deliver, and for agents' reads, where a destroyed key shows "[erased]".
- The vault not answering is never read as an erasure: KeysUnavailable goes up, and inside the
  consumer's transaction it is raised as a transient error so the batch is retried, not dead-lettered.
"""

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from eventkit import crypto
from servicekit.keyring import KeysUnavailable

CONTACT_COLUMN = "notification_contacts.value"
_LOOKUP_PURPOSE = "notification-contact-lookup"


class VaultUnavailable(KeysUnavailable, ConnectionError):
    """KeysUnavailable that the consumer and the delivery loop treat as transient (an OSError):
    the batch is retried until the vault answers, never dead-lettered."""


@contextlib.contextmanager
def retry_while_vault_unavailable() -> Iterator[None]:
    try:
        yield
    except VaultUnavailable:
        raise
    except KeysUnavailable as exc:
        raise VaultUnavailable(str(exc)) from exc


def sealed_contact(key: bytes, owner: str, kind: str, value: str) -> tuple[str, str, str]:
    """(kind, token, lookup) of one address, as notification_contacts stores it."""
    lookup = crypto.blind_index(crypto.derive_key(key, _LOOKUP_PURPOSE), f"{kind}|{value}")
    return kind, crypto.encrypt_text(key, f"{owner}|{CONTACT_COLUMN}", value), lookup


def open_contact(token: str, owner: str | None, keys: Mapping[str, bytes | None]) -> str | None:
    """The address, or None when its key is gone (an erased customer has no address)."""
    if owner is None:
        return token  # a row from before sealing, not sealed yet
    value = crypto.open_token(token, owner, CONTACT_COLUMN, keys)
    return None if value == crypto.ERASED else value


def seal_columns(key: bytes, owner: str, **columns: str | None) -> dict[str, str | None]:
    """notifications columns (address, subject, body) sealed under `owner`'s data key."""
    return {
        name: None if text is None else crypto.encrypt_text(key, f"{owner}|notifications.{name}", text)
        for name, text in columns.items()
    }


def open_column(token: str | None, owner: str | None, name: str, keys: Mapping[str, bytes | None]) -> str | None:
    """A notifications column as readable text: plain for staff (owner None), "[erased]" without a key."""
    if owner is None or token is None:
        return token
    return crypto.open_token(token, owner, f"notifications.{name}", keys)


def owners(items: Sequence[Mapping[str, object]], field: str = "sealed_by") -> set[str]:
    return {o for i in items if isinstance(o := i.get(field), str)}
