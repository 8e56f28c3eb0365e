"""notification: wiring. Rules and delivery come with their own issue; today it serves the timeline."""

from eventkit.app import ServiceSpec, create_app, serve

app = create_app(
    ServiceSpec(name="notification", title="crm notification", description="Customer and staff notifications.")
)

if __name__ == "__main__":
    serve(app)
