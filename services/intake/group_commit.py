"""Group commit: requests that arrive while earlier ones are being written share the next transaction."""

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Sequence
from typing import Any

import asyncpg
from eventkit.eventstore import EventStore
from eventkit.telemetry import current_traceparent
from prometheus_client import Histogram

from intake.recording import Item, Submission, record_submissions
from intake.vault import Vault

GROUP_SIZE = Histogram(
    "crm_intake_requests_per_transaction",
    "Interaction requests written by one transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)

_Waiting = tuple[Submission, "asyncio.Future[list[dict[str, Any]]]", contextvars.Context]


class GroupCommit:
    """Group commit: requests that arrive while earlier ones are being written share the next
    transaction, so under load one BEGIN ... COMMIT (and one lock, one snapshot, one insert of
    each kind) serves many requests, and when idle a request is written at once, alone.

    At most `in_flight` transactions run at a time; a group holds up to `max_items` items and
    never two requests with the same key (the second must see the first's answer). When a group
    fails, for whatever reason, its requests are written again one by one, so each gets its own
    answer: its own validation error, conflict, or success. A group's database spans belong to
    its first request's trace; every event carries the traceparent of its own request.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        events: EventStore,
        vault: Vault,
        source: str,
        *,
        in_flight: int = 4,
        max_items: int = 1000,
    ) -> None:
        self._write = functools.partial(record_submissions, pool, events, vault, source)
        self._free = in_flight
        self._max_items = max_items
        self._pending: deque[_Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, items: Sequence[Item], request_key: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        sub = Submission(tuple(items), request_key, current_traceparent())
        self._pending.append((sub, future, contextvars.copy_context()))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._pending and self._free > 0:
            group = self._take()
            GROUP_SIZE.observe(len(group))
            self._free -= 1
            task = asyncio.create_task(self._commit(group), context=group[0][2])
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._free += 1
        self._dispatch()

    def _take(self) -> list[_Waiting]:
        group = [self._pending.popleft()]
        keys = set(group[0][0].claims())
        size = len(group[0][0].items)
        while self._pending:
            sub = self._pending[0][0]
            claimed = sub.claims().keys()
            if size + len(sub.items) > self._max_items or not keys.isdisjoint(claimed):
                break
            group.append(self._pending.popleft())
            keys |= claimed
            size += len(sub.items)
        return group

    async def _commit(self, group: list[_Waiting]) -> None:
        try:
            await self._commit_group(group)
        finally:  # cancelled (shutdown): nobody may wait forever
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(RuntimeError("the write was interrupted"))

    async def _commit_group(self, group: list[_Waiting]) -> None:
        outcomes: list[list[dict[str, Any]] | BaseException]
        try:
            outcomes = list(await self._write([sub for sub, _, _ in group]))
        except Exception as exc:
            if len(group) == 1:
                outcomes = [exc]
            else:
                alone = [self._write([sub]) for sub, _, _ in group]
                outcomes = [r if isinstance(r, BaseException) else r[0]
                            for r in await asyncio.gather(*alone, return_exceptions=True)]  # fmt: skip
        for (_, future, _), outcome in zip(group, outcomes, strict=True):
            if future.done():  # the request was cancelled; its write stands (a retry gets its answer)
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
