"""The producers' key partitioner is aiokafka's default one (the Java client's), hashes remembered."""

from aiokafka.partitioner import DefaultPartitioner
from eventkit.topics import partition_for_key
from hypothesis import given
from hypothesis import strategies as st

DEFAULT = DefaultPartitioner()


@given(key=st.binary(max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_a_key_goes_where_the_default_partitioner_puts_it(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    expected = DEFAULT(key, all_partitions, all_partitions)
    assert partition_for_key(key, all_partitions, all_partitions) == expected
    assert partition_for_key(key, all_partitions, all_partitions) == expected  # again, from the cache


def test_no_key_picks_an_available_partition() -> None:
    picked = {partition_for_key(None, [0, 1, 2, 3], [2, 3]) for _ in range(200)}
    assert picked <= {2, 3}
    assert picked == {2, 3}
