"""Topic names: one topic per producing domain, keyed and partitioned by customer id."""

INTAKE = "crm.intake.v1"
CASE = "crm.case.v1"
NOTIFICATION = "crm.notification.v1"
ANALYTICS = "crm.analytics.v1"
DEADLETTER = "crm.deadletter.v1"

# Every topic that carries CloudEvents; each service projects all of them into its timeline.
ALL_EVENT_TOPICS: tuple[str, ...] = (INTAKE, CASE, NOTIFICATION, ANALYTICS)

# A service's own topic that it projects in the transaction that stores the events, not from
# Kafka: its consumer group does not read it. Intake's own timeline was the slowest of the four
# to show an accepted interaction (its consumer shares one event loop with intake's HTTP
# handling); now the event is there when the write commits.
PROJECTED_WHEN_STORED: dict[str, str] = {"intake": INTAKE}

DESCRIPTIONS: dict[str, str] = {
    INTAKE: "Customers, identities, consent and every recorded interaction, produced by intake.",
    CASE: "Case (ticket) lifecycle, SLA and follow-up events, produced by case.",
    NOTIFICATION: "Notification decisions and deliveries, produced by notification.",
    ANALYTICS: "Customer segment and churn-risk changes, produced by analytics.",
    DEADLETTER: "Messages a consumer could not decode or apply, with the reason in headers.",
}
