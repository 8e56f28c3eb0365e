"""A web shop's checkout records each order as a purchase on the customer's timeline.

The order number makes the write idempotent twice over: `client_event_id` lets intake answer a
resubmitted checkout (a double click, a reload) with the first answer, and the idempotency key,
derived from it, makes the client's own retries safe.

    python web_shop.py http://localhost:8001 "$(cat .data/admin.key)"
"""

import sys
from datetime import UTC, datetime

from crm_client import Accepted, Client, CrmError


def record_order(
    client: Client, order_id: str, ordered_at: datetime, email: str, total: str, items: list[str]
) -> Accepted:
    return client.record_interaction(
        idempotency_key=f"order-{order_id}",
        client_event_id=f"order-{order_id}",
        customer={"email": email},
        channel="web",
        direction="inbound",
        kind="purchase",
        occurred_at=ordered_at,  # the order's own time: a resubmission is the same request
        content=f"Order {order_id}: {', '.join(items)} ({total})",
        metadata={"order_id": order_id, "total": total, "items": items},
    )


def main(
    intake_url: str,
    api_key: str,
    order_id: str = "10042",
    email: str = "ana@example.com",
    ordered_at: datetime | None = None,
) -> Accepted:
    with Client(intake_url, api_key) as client:
        try:
            when = ordered_at or datetime.now(UTC)
            accepted = record_order(client, order_id, when, email, "59.90 EUR", ["router", "cable"])
        except CrmError as exc:  # the checkout goes on; the shop logs why the timeline missed it
            print(f"not recorded: {exc.error}: {exc.message}", file=sys.stderr)
            raise
        print(f"order {order_id} recorded for customer {accepted.customer_id} as {accepted.event_id}")
        return accepted


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
