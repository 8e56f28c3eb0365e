"""`crm replay`'s second source: the projections a service makes from its own event store."""

from eventkit import db


async def rebuild(service: str, conn: db.Connection) -> None:
    """intake's customer fields and tags and case's case fields and tags (issue 29) are projections
    of the service's own event store (what it stored, not what the topics hold): rebuilt from there
    in one transaction, which holds the tables meanwhile, so a request changing them waits for it."""
    if service == "intake":
        from intake.field_store import rebuild as rebuild_intake  # the service's own code, only for it

        async with conn.transaction():
            applied = await rebuild_intake(conn)
        print(f"rebuilt intake's customer fields and tags from {applied:,} of its stored events")
    elif service == "case":
        from case.field_store import rebuild as rebuild_case
        from eventkit.eventstore import EventStore

        async with conn.transaction():
            cases = await rebuild_case(conn, EventStore("case"))
        print(f"rebuilt case fields and tags of {cases:,} cases from case's events")
