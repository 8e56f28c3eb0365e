"""The foundation's end-to-end scenario on real Apache Kafka (see conftest.py)."""

import pytest
from crmtools.devstack import Stack

from tests.e2e.conftest import Accepted, post_all, wait_converged
from tests.e2e.test_timeline_sync import assert_exact, workload

pytestmark = pytest.mark.e2e


async def test_timelines_agree_on_apache_kafka(stack: Stack) -> None:
    accepted = Accepted()
    await post_all(stack.services["intake"].url, workload("real", 20, 400, seed=31), accepted)
    await wait_converged(stack, accepted)
    await assert_exact(stack, accepted)
