"""analytics: wiring. KPIs and risk scores come with their own issue; today it serves the timeline."""

from eventkit.app import ServiceSpec, create_app, serve

app = create_app(ServiceSpec(name="analytics", title="crm analytics", description="KPIs and customer insights."))

if __name__ == "__main__":
    serve(app)
