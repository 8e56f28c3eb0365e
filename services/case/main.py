"""case: wiring. The case domain comes with its own issue; today it serves the shared timeline."""

from eventkit.app import ServiceSpec, create_app, serve

app = create_app(ServiceSpec(name="case", title="crm case", description="Cases (tickets) and SLA clocks."))

if __name__ == "__main__":
    serve(app)
