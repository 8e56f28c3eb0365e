"""Named crash points for recovery tests.

`EVENTKIT_CRASH_AT=relay.after_ack` makes the process die (as if by SIGKILL: no cleanup, no
flush) the first time it reaches that point; `relay.before_send@3` the third time, so that the
work before it (an HTTP answer on its way out) is not cut off by a race. Unset in production,
the check is one dict lookup.
"""

import os


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, spec.split(",")):
        name, _, nth = item.partition("@")
        points[name] = int(nth) if nth else 1
    return points


_CRASH_AT = _parse(os.environ.get("EVENTKIT_CRASH_AT", ""))


def crash_point(name: str) -> None:
    if name in _CRASH_AT:
        _CRASH_AT[name] -= 1
        if _CRASH_AT[name] <= 0:
            os._exit(137)
