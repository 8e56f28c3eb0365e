"""A chat widget records each message of a conversation and shows the customer's timeline, with
the message just sent already in it (read your writes: `wait_for`).

    python chat_widget.py http://localhost:8001 "$(cat .data/admin.key)"
"""

import sys
from datetime import UTC, datetime

from crm_client import Accepted, Client, Timeline


def send(client: Client, session: str, seq: int, email: str, text: str, direction: str = "inbound") -> Accepted:
    """Record one chat message (`seq` numbers the messages of the session)."""
    return client.record_interaction(
        client_event_id=f"chat-{session}-{seq}",  # a message the widget resends is recorded once
        customer={"email": email},
        channel="chat",
        direction=direction,
        kind="message",
        occurred_at=datetime.now(UTC),
        content=text,
        metadata={"chat_session": session},
    )


def main(intake_url: str, api_key: str, email: str = "ana@example.com", session: str = "c-0001") -> Timeline:
    with Client(intake_url, api_key) as client:
        send(client, session, 1, email, "Hi, my router keeps dropping the connection.")
        last = send(client, session, 2, email, "Sorry to hear that! Have you restarted it?", "outbound")
        # The timeline as of the last message: the call answers once that event is in it.
        page = client.timeline(last.customer_id, wait_for=last.event_id, timeout_ms=5000, limit=20)
        for event in page.events:
            print(event.time.isoformat(), event.type, event.data.get("content", ""))
        return page


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
