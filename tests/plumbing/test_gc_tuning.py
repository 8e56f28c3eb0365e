"""servicekit.gc_tuning: freeze after start-up, rarer passes, every pass timed."""

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from servicekit import gc_tuning


@pytest.fixture
def restored() -> Iterator[None]:
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks


def passes(service: str, generation: int) -> float:
    value = REGISTRY.get_sample_value("crm_gc_pause_seconds_count", {"service": service, "generation": str(generation)})
    assert value is not None, (service, generation)
    return value


def test_settle_freezes_the_heap_and_times_each_pass(restored: None) -> None:
    gc_tuning.settle("test-collector")
    frozen = REGISTRY.get_sample_value("crm_gc_frozen_objects", {"service": "test-collector"})
    # the count at settle time; frozen objects that reference counting frees since leave the count
    assert frozen is not None and frozen >= gc.get_freeze_count() > 10_000  # this process's modules...
    assert gc.get_threshold() == gc_tuning.THRESHOLD
    before = passes("test-collector", 2)
    gc.collect()
    assert passes("test-collector", 2) == before + 1


def test_settling_again_keeps_one_meter(restored: None) -> None:
    gc_tuning.settle("test-collector-a")
    gc_tuning.settle("test-collector-b")
    meters = [cb for cb in gc.callbacks if isinstance(cb, gc_tuning._PauseMeter)]
    assert len(meters) == 1
    before = passes("test-collector-a", 2), passes("test-collector-b", 2)
    gc.collect()
    assert (passes("test-collector-a", 2), passes("test-collector-b", 2)) == (before[0], before[1] + 1)
