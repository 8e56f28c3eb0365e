"""The wire contract between the four services and anyone subscribing to their topics.

Pure data: topic names (topics.py), the shared vocabulary and intake's payloads (events.py),
each other domain's payloads in its own module, and the registry of every type (registry.py).
No I/O; services and outside tools import it alike.
"""
