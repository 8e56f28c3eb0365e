"""Consumers against a broker that takes a commit of the offsets of before it restarted.

The embedded broker (Tansu) forgets everything when it restarts, and then stores a commit from a
group member that has not yet noticed (aiokafka commits before it rejoins) for a group and topic
it no longer knew; Apache Kafka answers UNKNOWN_MEMBER_ID. The group then rejoins from those
offsets, past the end of the partitions the relays are filling again, and would wait there while
other events fill the offsets before it (docs/broker.md). So a consumer:

- rereads every assigned partition from the start when the group's generation did not grow at
  an assignment (GroupGenerations): the coordinator forgot the group;
- commits nothing once its membership is lost (membership_lost): a coordinator that forgot the
  group would take the commit;
- rereads a partition that ends before its position (past_end), the position being what it
  applied or where its client fetches next (fetch_position): a position check alone cannot
  always tell, as the relays can fill the partition past the old offset before the group rejoins.

Repeats are skipped by the applied-events record, so rereading costs only the traffic. Used by
eventkit's IdempotentConsumer (analytics' KPI stream is one too).
"""

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition


class GroupGenerations:
    """Tells, at each assignment, whether the group coordinator forgot the group: its generation
    is no later than the last one this member had. Generations only grow while a group exists;
    a broker restarted empty (or a deleted group) starts again from the first. Its committed
    offsets are then gone or stale (the embedded broker takes a commit of the old ones), and the
    topics are being published again from the services' stores: read them from the start."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._pending = False  # forgotten at an assignment of no partitions: tell the next one

    def forgot(self, generation: int, assigned: bool) -> bool:
        """At an assignment of this generation (`assigned`: of any partition). The first one after
        the restart can be of none (the topics not made anew yet); the next one has the news."""
        last, self._last = self._last, generation
        if last is not None and generation <= last:
            self._pending = True
        if self._pending and assigned:
            self._pending = False
            return True
        return False


def past_end(end: int, *positions: int | None) -> int | None:
    """The furthest of these positions (what was applied, where the client fetches next) if the
    partition ends before it: the broker lost the partition and it is being refilled, so it is to
    be read again from the start. None if the partition reaches it (or nothing is known)."""
    ahead = max((p for p in positions if p is not None), default=0)
    return ahead if end < ahead else None


def generation(consumer: AIOKafkaConsumer) -> int:
    """The consumer's group generation; negative once the coordinator no longer knows the member."""
    return int(consumer._coordinator.generation)  # aiokafka has no public accessor


def membership_lost(consumer: AIOKafkaConsumer) -> bool:
    """aiokafka reset the generation: the coordinator no longer knew this member. A commit now
    would be refused by one that knows the group, and taken by one that forgot it (a broker
    restarted empty), as offsets of a log that is gone."""
    return generation(consumer) < 0


def fetch_position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """Where the client fetches the partition next, if it knows (aiokafka's position() waits for
    a position being reset, so it is read from the subscription state instead)."""
    subscription = consumer._subscription.subscription
    state = subscription.assignment.state_value(tp) if subscription is not None else None
    return state.position if state is not None and state.has_valid_position else None
