"""CPython's cycle collector, tuned for a long-running service, and its pauses as a metric.

At start-up a service builds ~100,000 objects that live as long as the process (modules, pydantic
models, routes, clients). At the default settings every full pass of the collector walks all of
them again and finds nothing, with the process stopped. Frozen after start-up (gc.freeze), a
full pass walks only what was made since; passes are rarer too (the pauses and the CPU saved
are in BENCHMARKS.md, "The cycle collector").

Reference counting still frees almost everything at once; the collector only finds cycles, and
still does, just less often.
"""

import gc
import time
from typing import Any

from eventkit.telemetry import GC_FROZEN, GC_PAUSE

# Young-generation pass every 10,000 net allocations of containers instead of 700; older
# generations every 20 passes of the one below instead of 10.
THRESHOLD = (10_000, 20, 20)


class _PauseMeter:
    """A gc callback that times each pass (start and stop arrive on the same thread)."""

    def __init__(self, service: str) -> None:
        self._by_generation = [GC_PAUSE.labels(service, str(g)) for g in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)


def settle(service: str) -> None:
    """Call once start-up is done: freeze what exists, collect more rarely, time every pass."""
    gc.collect()  # start-up garbage goes now rather than being frozen with the rest
    gc.freeze()
    gc.set_threshold(*THRESHOLD)
    GC_FROZEN.labels(service).set(gc.get_freeze_count())
    gc.callbacks[:] = [cb for cb in gc.callbacks if not isinstance(cb, _PauseMeter)]  # a second start
    gc.callbacks.append(_PauseMeter(service))
