"""notification's read models, applied by the idempotent consumer inside its transaction.

- ProfileProjection: addresses (email, phone) from crm.customer.created.v1 and
  crm.customer.identifiers_added.v1, deliverable only when verified or used by the customer
  themselves (docs/product.md §14, docs/identity-trust.md; crm.customer.identifiers_verified.v1 makes a
  claimed one deliverable), consent from crm.consent.changed.v1, preferences from
  crm.customer.preferences_changed.v1. Merges are followed through the timeline's aliases
  (the timeline projection records them earlier in the same transaction). An unmerge
  (crm.customer.unmerged.v1) moves the addresses it gives back to the merged id and clears the
  survivor's consent entries only the merge had given it (docs/merge-and-unmerge.md).
  Addresses are stored sealed under the data key that sealed them in the event (privacy.py);
  an erased customer's (key gone) are not kept.

The policies that react to events by deciding messages are in policies.py.

The vault not answering (KeysUnavailable) fails the batch as a transient error: it is retried,
never dead-lettered, and never read as an erasure.
"""

from collections.abc import Sequence

import asyncpg
from eventkit import crypto
from eventkit.envelope import Envelope
from servicekit.keyring import KeyRing

from contracts.events import (
    CONSENT_CHANGED,
    CUSTOMER_CREATED,
    CUSTOMER_UNMERGED,
    IDENTIFIERS_ADDED,
    IDENTIFIERS_VERIFIED,
    PREFERENCES_CHANGED,
)
from notification import privacy, store
from notification.domain import ALL_CHANNELS

_CONTACT_KINDS = ("email", "phone")


def deliverable(data: dict[str, object]) -> bool:
    """May messages go to the addresses of this created/added event? Verified ones, and those the
    customer used themselves (the inbound interaction that created them). No trust field: an
    event from before trust existed, when every identifier was trusted."""
    return data.get("trust") in (None, "verified") or data.get("inbound") is True


def _owner(e: Envelope) -> str:
    """Whose data key sealed the event's personal fields (the customer's, if nothing is sealed)."""
    return crypto.sealed_by(e.data) or str(e.data["customer_id"])


class ProfileProjection:
    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        with privacy.retry_while_vault_unavailable():
            await self._apply(conn, events)

    async def _apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        owners = {_owner(e) for e in events if e.type in (CUSTOMER_CREATED, IDENTIFIERS_ADDED, IDENTIFIERS_VERIFIED)}
        keys = await self.keyring.keys(owners, create=True) if owners else {}  # one lookup per batch
        for e in events:
            data = e.data
            if e.type in (CUSTOMER_CREATED, IDENTIFIERS_ADDED):
                owner = _owner(e)
                key = keys.get(owner)
                if key is None:
                    continue  # erased: nothing of theirs is kept
                plain = crypto.unseal(data, {owner: key})
                sealed = [
                    privacy.sealed_contact(key, owner, i["kind"], i["value"])
                    for i in plain.get("identifiers", [])
                    if i.get("kind") in _CONTACT_KINDS
                    and isinstance(i.get("value"), str)
                    and i["value"] not in (crypto.SEALED, crypto.ERASED)
                ]
                await store.add_contacts(conn, data["customer_id"], owner, sealed, e.time, deliverable(data))
            elif e.type == IDENTIFIERS_VERIFIED:
                await self._verified(conn, e, keys)
            elif e.type == CONSENT_CHANGED:
                channel = data.get("channel") or ALL_CHANNELS
                await store.set_consent(conn, data["customer_id"], data["purpose"], channel, data["granted"], e.time)
            elif e.type == PREFERENCES_CHANGED:
                await store.set_preferences(conn, data["customer_id"], data["preferences"], e.time)
            elif e.type == CUSTOMER_UNMERGED:
                await self._unmerged(conn, e)

    async def _unmerged(self, conn: asyncpg.Connection, e: Envelope) -> None:
        """The addresses given back leave the survivor's contacts for the merged id's; the consent
        entries only the merge had given the survivor are no answer again."""
        survivor, merged = e.data["survivor_id"], e.data["merged_id"]
        for entry in e.data.get("consent_cleared", []):
            await store.clear_consent(conn, survivor, entry["purpose"], entry.get("channel") or ALL_CHANNELS)
        owner = _owner(e)
        key = (await self.keyring.keys({owner})).get(owner)
        if key is None:
            return  # erased: nothing of theirs is kept
        plain = crypto.unseal(e.data, {owner: key})
        given = [
            (i["kind"], i["value"])
            for i in plain.get("identifiers", [])
            if i.get("kind") in _CONTACT_KINDS and isinstance(i.get("value"), str)
        ]
        owners = {c.owner for c in await store.contacts(conn, [survivor]) if c.owner is not None}
        contact_keys = await self.keyring.keys(owners) if owners and given else {}
        found = [
            (o, kind, privacy.sealed_contact(k, o, kind, value)[2])
            for o, k in contact_keys.items()
            if k is not None
            for kind, value in given
        ]
        await store.move_contacts(conn, survivor, merged, found)

    async def _verified(self, conn: asyncpg.Connection, e: Envelope, keys: dict[str, bytes | None]) -> None:
        """Make the verified addresses deliverable wherever they are stored for this customer: under
        the survivor or a merged id, sealed by whichever key sealed them (the lookup is per key)."""
        owner = _owner(e)
        if keys.get(owner) is None:
            return  # erased
        plain = crypto.unseal(e.data, {owner: keys[owner]})
        verified = [
            (i["kind"], i["value"])
            for i in plain.get("identifiers", [])
            if i.get("kind") in _CONTACT_KINDS and isinstance(i.get("value"), str)
        ]
        if not verified:
            return
        ids = await store.customer_ids(conn, e.data["customer_id"])
        owners = {c.owner for c in await store.contacts(conn, ids) if c.owner is not None}
        contact_keys = await self.keyring.keys(owners) if owners else {}
        found = [
            (o, kind, privacy.sealed_contact(k, o, kind, value)[2])
            for o, k in contact_keys.items()
            if k is not None
            for kind, value in verified
        ]
        await store.make_deliverable(conn, ids, found)
