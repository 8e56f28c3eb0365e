"""The embedded broker keeps nothing on disk. When it restarts empty under load, every service
notices that it forgot acknowledged events and publishes its store again; nothing accepted is
lost, the repeats change nothing, and all four digests agree within 30 s."""

import asyncio
import time

import pytest
from aiokafka.structs import ConsumerRecord
from crmtools.devstack import Stack
from crmtools.infra import EmbeddedBroker
from eventkit.envelope import from_kafka

from contracts.topics import INTAKE
from tests.chaos.load import (
    Figures,
    MixedLoad,
    assert_recovered,
    metric_sums,
    rose_by,
)
from tests.conftest import eventually, read_from_start
from tests.notification.receivers import SmtpServer

pytestmark = pytest.mark.e2e


async def ids_on_topic(bootstrap: str, topic: str, wanted: set[str], timeout_s: float = 30) -> set[str]:
    """The event ids on the topic, read from the start until they include `wanted` (or time is up)."""

    def ids(records: list[ConsumerRecord[bytes, bytes]]) -> set[str]:
        return {from_kafka(r.key, r.value, r.headers).id for r in records}

    return ids(await read_from_start(bootstrap, topic, timeout_s, lambda got: wanted <= ids(got)))


async def test_broker_restart_forgetting_everything_under_load_loses_nothing(
    stack: Stack, smtp: SmtpServer, figures: Figures
) -> None:
    assert isinstance(stack.broker, EmbeddedBroker)
    # complaints open cases: case, then notification (the emails) and analytics (risk) publish too
    load = MixedLoad(stack, "amnesia", customers=16, seed=11, complaint_share=0.25)
    await load.start()

    async def every_service_published() -> dict[str, float] | None:
        published = await metric_sums(stack, "crm_outbox_published_total")
        return published if all(published.values()) else None

    await eventually(every_service_published, timeout_s=30, what="all four services publish before the restart")
    amnesia_before = await metric_sums(stack, "crm_broker_amnesia_total")
    republished_before = await metric_sums(stack, "crm_outbox_republished_total")
    duplicates_before = await metric_sums(stack, "crm_events_duplicate_total")
    unread_before = await metric_sums(stack, "crm_outbox_unread_total")

    assert load.is_running()
    outage = time.monotonic()
    stack.broker.kill()  # SIGKILL: memory storage, so every topic, message and offset is gone
    stack.broker.start()
    recovered = time.monotonic()  # the broker answers again, empty
    figures.outage_s = recovered - outage
    figures.kill("broker")
    await asyncio.sleep(3)  # the load goes on across the restart (intake never needs the broker to accept)
    assert load.is_running()
    await load.stop(figures)

    await assert_recovered(stack, load, smtp, recovered, figures)

    # each service noticed and published its store again; each consumer absorbed the repeats
    amnesia = rose_by(amnesia_before, await metric_sums(stack, "crm_broker_amnesia_total"))
    republished = rose_by(republished_before, await metric_sums(stack, "crm_outbox_republished_total"))
    duplicates = rose_by(duplicates_before, await metric_sums(stack, "crm_events_duplicate_total"))
    figures.republished = int(sum(republished.values()))
    figures.duplicates_absorbed = int(sum(duplicates.values()))
    # what the broker acknowledged in the republish but a read of the topic did not return (amnesia.py)
    figures.unread_republished_again = int(
        sum(rose_by(unread_before, await metric_sums(stack, "crm_outbox_unread_total")).values())
    )
    for name in stack.services:
        assert amnesia[name] >= 1, (name, amnesia)
        assert republished[name] > 0, (name, republished)
        assert duplicates[name] > 0, (name, duplicates)

    # the new broker holds intake's whole store again, for any subscriber that starts now
    intake_ids = {i for ids in load.accepted.by_customer.values() for i in ids}
    assert intake_ids <= await ids_on_topic(stack.broker.bootstrap, INTAKE, intake_ids)
    figures.outcome = "ok"
