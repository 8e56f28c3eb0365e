"""eventkit.random_bytes: bulk-drawn random bytes, each handed out once, never shared with a fork."""

import os
import uuid

from eventkit import random_bytes


def test_values_are_fresh_and_well_formed() -> None:
    ids = [random_bytes.new_id() for _ in range(5000)]  # more than one draw of the buffer
    assert len(set(ids)) == len(ids)
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and str(parsed) == text
    chunks = [random_bytes.random_bytes(12) for _ in range(1000)]
    assert len(set(chunks)) == len(chunks) and {len(c) for c in chunks} == {12}
    assert len(random_bytes.random_bytes(random_bytes.DRAW_BYTES + 1)) == random_bytes.DRAW_BYTES + 1
    token = random_bytes.random_hex(16)
    assert len(token) == 32 and int(token, 16) >= 0


def test_a_forked_child_never_hands_out_the_parents_next_bytes() -> None:
    random_bytes.random_bytes(1)  # the buffer holds bytes not yet handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next 16 bytes, then out without running pytest's teardown
        try:
            os.write(write, random_bytes.random_bytes(16))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != random_bytes.random_bytes(16)
