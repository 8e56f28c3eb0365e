"""A campaign sender process for the restart test: decides targets one per batch until none is
left, or until EVENTKIT_CRASH_AT kills it (as SIGKILL would) between two batches.

Reads the database (CAMPAIGN_DSN) and the customers' data keys (CAMPAIGN_KEYS: JSON of
customer id -> base64 key) from the environment.
"""

import asyncio
import base64
import os

import orjson
from eventkit import db
from eventkit.eventstore import EventStore
from notification import campaign_handlers, domain
from notification.context import NotificationContext
from servicekit.keyring import KeyRing, MemoryKeySource


async def main() -> None:
    keys = MemoryKeySource()
    keys.stored.update({c: base64.b64decode(k) for c, k in orjson.loads(os.environ["CAMPAIGN_KEYS"]).items()})
    ctx = NotificationContext(
        source="/crm/notification",
        events=EventStore("notification-test"),
        book=domain.load_rulebook(),
        keyring=KeyRing(keys),
    )
    pool = await db.create_pool(os.environ["CAMPAIGN_DSN"], 2)
    try:
        while await campaign_handlers.send_batch(pool, ctx, 1):
            pass
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
