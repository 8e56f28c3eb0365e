"""intake: wiring."""

from pathlib import Path

from eventkit.crypto import parse_master_key
from servicekit.app import ServiceSpec, create_app, serve

from intake import console
from intake.admin_api import router as admin_router
from intake.api import router
from intake.context import IntakeContext
from intake.customer_api import router as customer_router
from intake.field_api import router as field_router
from intake.handlers import expire_idempotency_keys
from intake.merge_api import router as merge_router
from intake.settings import IntakeSettings
from intake.vault import Vault, VaultKeySource

settings = IntakeSettings.for_service("intake")
vault = Vault(parse_master_key(settings.master_key))

app = create_app(
    ServiceSpec(
        name="intake",
        title="crm intake",
        description="Interactions from every channel, resolved to one customer, stored and published.",
        routers=[router, customer_router, field_router, merge_router, admin_router, console.router],
        migrations=[Path(__file__).parent / "migrations"],
        body_limits={"/v1/interactions:batch": 16 * 1024 * 1024},
        background=[expire_idempotency_keys],
        static={console.PREFIX: console.FILES},
        content_security=console.content_security(settings),
        key_source=lambda rt: VaultKeySource(lambda: rt.db, vault),
    ),
    settings,
    IntakeContext(vault),
)

if __name__ == "__main__":
    serve(app)
