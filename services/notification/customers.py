"""The customer as notification knows them: their data key, and their profile with addresses opened."""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from servicekit.keyring import KeyErased

from notification import domain, privacy, store
from notification.context import NotificationContext


async def writing_key(ctx: NotificationContext, customer_id: str) -> bytes | None:
    """The key a customer's message is sealed with; None for an erased customer. KeysUnavailable
    (the vault not answering) goes up: waiting is right, reading it as an erasure is not."""
    try:
        return await ctx.keyring.key_for_writing(customer_id)
    except KeyErased:
        return None


async def customer_profile(
    conn: asyncpg.Connection, ctx: NotificationContext, ids: Sequence[str], addresses: bool = True
) -> domain.Profile:
    """The profile with its addresses opened (most recent first); addresses under a destroyed key
    are left out. Consent checks alone pass addresses=False and need no key."""
    profile, contacts = await store.profile(conn, ids)
    if not addresses or not contacts:
        return profile
    owners = {c.owner for c in contacts if c.owner is not None}
    keys = await ctx.keyring.keys(owners) if owners else {}
    # Only addresses messages may go to (docs/identity-trust.md); claimed ones are never chosen.
    opened = [(c, privacy.open_contact(c.value, c.owner, keys)) for c in contacts if c.deliverable]
    readable = sorted(((c, v) for c, v in opened if v is not None), key=lambda cv: cv[1])
    readable.sort(key=lambda cv: cv[0].added_at, reverse=True)  # stable: equal instants by address
    return dataclasses.replace(
        profile,
        emails=tuple(v for c, v in readable if c.kind == "email"),
        phones=tuple(v for c, v in readable if c.kind == "phone"),
    )


async def readable_data(ctx: NotificationContext, data: Mapping[str, Any]) -> dict[str, Any]:
    """The source event's data with its sealed fields opened, for a customer's own message."""
    return (await ctx.keyring.unseal([data]))[0]
