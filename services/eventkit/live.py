"""Live timeline: server-sent events of what this process's consumer just applied.

Subscribers are in memory, per customer. The consumer publishes after each committed batch; a
service's own events that it projects as it stores them (intake's) come from its relay, which
reads them committed.
Another instance of the service may be the one applying a customer's events (partitions are
shared), so the stream also polls the customer's event count every few seconds and sends what
it has not sent yet: live when local, a little later when not, never missing.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson

from eventkit.envelope import Envelope, format_time


def timeline_item(e: Envelope) -> dict[str, Any]:
    """The same shape as an item of GET .../timeline."""
    return {
        "event_id": e.id,
        "type": e.type,
        "time": format_time(e.time),
        "source": e.source,
        "subject": e.subject,
        "data": e.data,
    }


class TimelineFeed:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    def wants(self, customer_id: str) -> bool:
        return customer_id in self._subscribers

    def publish(self, events: Sequence[Envelope]) -> None:
        if not self._subscribers:
            return
        for e in events:
            for queue in self._subscribers.get(e.subject, ()):
                if queue.qsize() < 1000:  # a stalled browser must not grow memory without bound
                    queue.put_nowait(timeline_item(e))

    def subscribe(self, customer_ids: Iterable[str]) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for cid in customer_ids:
            self._subscribers.setdefault(cid, set()).add(queue)
        return queue

    def unsubscribe(self, customer_ids: Iterable[str], queue: asyncio.Queue[dict[str, Any]]) -> None:
        for cid in customer_ids:
            queues = self._subscribers.get(cid)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[cid]


class FeedSink(Protocol):
    """What a publisher of applied events needs of a feed."""

    def wants(self, customer_id: str) -> bool: ...

    def publish(self, events: Sequence[Envelope]) -> None: ...


class FeedOnLoop:
    """A TimelineFeed of another thread's event loop, for a publisher on a thread of its own (the
    relay, thread_loop.py): its queues belong to that loop, so events are handed to it."""

    def __init__(self, feed: TimelineFeed, loop: asyncio.AbstractEventLoop) -> None:
        self._feed = feed
        self._loop = loop

    def wants(self, customer_id: str) -> bool:
        return self._feed.wants(customer_id)  # a dict lookup: safe from any thread

    def publish(self, events: Sequence[Envelope]) -> None:
        self._loop.call_soon_threadsafe(self._feed.publish, list(events))


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {orjson.dumps(data).decode()}")
    return ("\n".join(lines) + "\n\n").encode()


async def heartbeat_stream(
    queue: asyncio.Queue[dict[str, Any]],
    catch_up: Callable[[], Awaitable[list[dict[str, Any]]]],
    prepare: Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]],
    poll_s: float = 3.0,
) -> AsyncIterator[bytes]:
    """Items from the queue as they come; every poll_s, whatever catch_up() finds that was missed.
    prepare() turns stored items into what the reader sees (sealed fields opened)."""
    sent: set[str] = set()
    yield b": connected\n\n"
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), poll_s)
            items = [item]
        except TimeoutError:
            items = await catch_up()
            yield b": keep-alive\n\n"
        for item in await prepare([i for i in items if i["event_id"] not in sent]):
            if item["event_id"] not in sent:
                sent.add(item["event_id"])
                yield sse("timeline", item, item["event_id"])
