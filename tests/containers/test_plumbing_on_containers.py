"""The plumbing tests, unchanged, on PostgreSQL 18 and Apache Kafka in containers.

Their `pool`, `dsn`, `bootstrap` and `producer` fixtures come from tests/conftest.py on top of
this folder's `infra` (conftest.py), so the same test bodies check the same code against the
real broker; skipped with the reason where no container engine answers.
"""

from tests.plumbing.test_consumer import (  # noqa: F401
    test_a_nul_in_a_header_is_still_dead_lettered_and_counted,
    test_poison_messages_are_dead_lettered_and_the_rest_applied,
    test_projection_failure_parks_only_that_event,
    test_redelivered_batch_changes_nothing,
)
from tests.plumbing.test_eventstore import (  # noqa: F401
    test_append_and_load_in_version_order,
    test_concurrent_writers_one_wins,
    test_stale_expected_version_is_a_conflict,
)
from tests.plumbing.test_outbox import (  # noqa: F401
    test_crash_after_ack_before_delete_publishes_again,
    test_relay_publishes_in_order_per_customer_and_empties_outbox,
    test_relay_wakes_on_commit_and_only_one_leads,
)
from tests.plumbing.test_timeline import test_merge_moves_timeline_under_survivor_including_late_events  # noqa: F401
