"""notification: wiring. Rules from events to messages, consent-aware decisions, durable delivery."""

from datetime import timedelta
from pathlib import Path

from eventkit.eventstore import EventStore
from servicekit.app import ServiceSpec, create_app, serve
from servicekit.keyring import remote_keyring
from servicekit.runtime import Runtime

from notification import campaign_handlers, domain, worker
from notification.api import router
from notification.campaign_api import router as campaign_router
from notification.context import NotificationContext
from notification.delivery import Senders, SmsSender, SmtpConfig, SmtpSender, WebhookPoster, WebhookSender
from notification.policies import ErasurePolicy, RulesPolicy
from notification.projections import ProfileProjection
from notification.settings import NotificationSettings

settings = NotificationSettings.for_service("notification")
poll_interval_s = settings.notification_poll_interval_ms / 1000
delivery_batch = settings.notification_delivery_concurrency
keyring = remote_keyring(settings)  # the runtime's ring too (ServiceSpec.keyring): one cache, one forget
context = NotificationContext(
    source=settings.source,
    events=EventStore("notification", max_event_bytes=settings.event_max_bytes),
    book=domain.load_rulebook(settings.notification_rules_file),
    keyring=keyring,
    directory=settings.directory(),
    customer_cap=settings.customer_cap(),
    staff_cap=settings.staff_cap(),
    digest=settings.digest_policy(),
    retry=settings.retry_policy(),
    profile_wait=timedelta(milliseconds=settings.notification_profile_wait_ms),
    send_lease=timedelta(milliseconds=settings.notification_send_lease_ms),
)
poster = WebhookPoster(settings.webhook_secret, settings.webhook_timeout_s)
senders = Senders(
    {
        "email": SmtpSender(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                tls=settings.smtp_tls,
                username=settings.smtp_username,
                password=settings.smtp_password,
                sender=settings.smtp_from,
                timeout_s=settings.smtp_timeout_s,
            )
        ),
        "webhook": WebhookSender(poster),
        "sms": SmsSender(poster, settings.sms_provider_url),
    }
)


async def deliveries(rt: Runtime[NotificationSettings, NotificationContext]) -> None:
    """The durable delivery loop (restarted by the runtime if it fails)."""
    await worker.run(rt.context, rt.db, senders, poll_interval_s, delivery_batch)


async def campaign_sender(rt: Runtime[NotificationSettings, NotificationContext]) -> None:
    """The paced campaign sender (restarted by the runtime if it fails)."""
    await campaign_handlers.run(rt.context, rt.db, settings.campaign_rate_per_s, poll_interval_s)


app = create_app(
    ServiceSpec(
        name="notification",
        title="crm notification",
        description="Customer and staff notifications: rules, consent-aware decisions, durable delivery.",
        subscribers=[
            ProfileProjection(keyring),
            RulesPolicy(context),
            campaign_handlers.AudiencePolicy(context),
            ErasurePolicy(context),
        ],
        routers=[router, campaign_router],
        migrations=[Path(__file__).parent / "migrations"],
        background=[deliveries, campaign_sender],
        keyring=keyring,
    ),
    settings,
    context,
)

if __name__ == "__main__":
    serve(app)
