"""Named crash points for recovery tests.

`EVENTKIT_CRASH_AT=relay.after_ack` makes the process die (as if by SIGKILL: no cleanup, no
flush) the first time it reaches that point. Unset in production, the check is one dict lookup.
"""

import os

_CRASH_AT = frozenset(filter(None, os.environ.get("EVENTKIT_CRASH_AT", "").split(",")))


def crash_point(name: str) -> None:
    if name in _CRASH_AT:
        os._exit(137)
