"""One coroutine on a thread of its own, in an event loop of its own.

For the outbox relay: in the service's loop it waited for turns behind HTTP requests and the
consumer between each of its steps (fetch the rows, send, take the acknowledgements, delete), so
the acknowledgements the broker had sent in ~2.5 ms were taken ~20 ms later at 500 events/s
(BENCHMARKS.md). On its own loop it runs when its sockets are ready, holding the interpreter lock
for its own steps only: freshness at 500 events/s, on fresh stacks, p50 112 -> 99 ms and p99
455 -> 289 ms (medians of 5-7 runs); single POST at 32 clients ~8-14 % lower in every pair
(the threads share the interpreter lock). A linger before each fetch (5 ms, for larger batches)
made both worse. Whatever it shares with the service's loop must be safe across threads:
prometheus metrics and logging are; a TimelineFeed is not (feed.FeedOnLoop).
"""

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

log = logging.getLogger(__name__)


class LoopThread:
    def __init__(self, name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._main = main
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel the coroutine and wait (without blocking the caller's loop) for the thread."""
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        await asyncio.to_thread(self._thread.join, timeout_s)
        if self._thread.is_alive():
            log.warning("%s did not stop within %s s", self._thread.name, timeout_s)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        try:
            await self._main()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("%s ended with an error", self._thread.name)
