"""intake: wiring."""

from pathlib import Path

from eventkit.app import ServiceSpec, create_app, serve

from intake.api import router

app = create_app(
    ServiceSpec(
        name="intake",
        title="crm intake",
        description="Interactions from every channel, resolved to one customer, stored and published.",
        routers=[router],
        migrations=[Path(__file__).parent / "migrations"],
    )
)

if __name__ == "__main__":
    serve(app)
