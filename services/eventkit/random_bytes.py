"""Random bytes from the operating system, drawn 4 KiB at a time, for values that are public.

Every event id (a version-4 UUID), AES-GCM nonce and made-up trace id needs 8-16 random bytes.
Drawn one by one (uuid.uuid4, os.urandom, secrets.token_hex) that is one getrandom system call
each, and on the development VMs system calls are dear: under batch load ~6 % of intake's CPU
went to them. Here the same generator's bytes are drawn in bulk and handed out once each, in
order. A process forked after a draw starts with an empty buffer, so parent and child never
hand out the same bytes. Key material does not come from here (crypto.new_data_key): a buffer
of future keys in memory is worth not having; future ids and nonces are no secret once used.
"""

import os
import threading
import uuid

DRAW_BYTES = 4096


class _Buffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # the outbox relay runs on a thread of its own (thread_loop.py)
        self._bytes = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._bytes):
                self._bytes = os.urandom(max(DRAW_BYTES, n))
                self._at = 0
            out = self._bytes[self._at : self._at + n]
            self._at += n
            return out

    def forget(self) -> None:
        self._bytes = b""
        self._at = 0
        self._lock = threading.Lock()  # a lock held at fork time stays held in the child


_buffer = _Buffer()
os.register_at_fork(after_in_child=_buffer.forget)


def random_bytes(n: int) -> bytes:
    """n bytes from the OS's generator, never handed out before (in this process or another)."""
    return _buffer.take(n)


def random_hex(n: int) -> str:
    """n random bytes as 2n lowercase hex digits (secrets.token_hex, without a system call each)."""
    return _buffer.take(n).hex()


def new_id() -> str:
    """A random (version 4) UUID in canonical form, as str(uuid.uuid4()) gives it."""
    return str(uuid.UUID(bytes=_buffer.take(16), version=4))
