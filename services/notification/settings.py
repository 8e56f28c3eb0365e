"""notification's own settings, on top of the shared ones (environment variables, case-insensitive).

STAFF_CONTACTS is JSON: '{"support": {"webhook_url": "https://..."}, "agent-7": {"email": "a7@corp"}}'.
"""

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from servicekit.settings import Settings, secret_problems

from notification import delivery, domain

MIN_WEBHOOK_KEY_BYTES = 24  # the least Standard Webhooks allows for a secret's key


class StaffContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str | None = None
    webhook_url: str | None = None


class NotificationSettings(Settings):
    # email over SMTP
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: Literal["none", "starttls", "implicit"] = "none"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "crm@example.com"
    smtp_timeout_s: float = Field(default=10, gt=0)
    # signed webhooks (staff) and the SMS provider's webhook
    # HMAC-SHA256 key: `whsec_<base64>` (Standard Webhooks) or a plain secret (its UTF-8 bytes are
    # the key); the default is refused outside development
    webhook_secret: str = "dev-webhook-secret"
    webhook_timeout_s: float = Field(default=10, gt=0)
    sms_provider_url: str | None = None
    # staff recipients of owner/team rules
    staff_contacts: dict[str, StaffContactIn] = {}
    team_webhook_url: str | None = None  # anyone not in STAFF_CONTACTS
    team_email: str | None = None  # anyone not in STAFF_CONTACTS, when there is no team webhook
    staff_language: str = "en"
    # rules
    notification_rules_file: Path = domain.RULES_FILE
    # frequency caps: non-critical customer and staff messages (critical ones pass), per recipient and window
    notification_cap_max: int = Field(default=5, ge=0)
    notification_cap_window_s: float = Field(default=86_400, gt=0)
    notification_staff_cap_max: int = Field(default=60, ge=0)
    notification_staff_cap_window_s: float = Field(default=3600, gt=0)
    # digests: non-critical customer messages over the cap are collected per window into one
    # message (due at the window's end), instead of being suppressed as `cap`
    notification_digest_enabled: bool = True
    notification_digest_window_s: float = Field(default=3600, gt=0)
    # delivery
    notification_retry_max_attempts: int = Field(default=5, ge=1)
    notification_retry_base_ms: int = Field(default=2000, ge=1)
    notification_retry_max_ms: int = Field(default=600_000, ge=1)
    notification_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    notification_poll_interval_ms: int = Field(default=500, ge=10)
    notification_send_lease_ms: int = Field(default=60_000, ge=100)  # a send still "sending" after this crashed
    notification_profile_wait_ms: int = Field(default=30_000, ge=0)  # wait for the customer's profile events
    notification_delivery_concurrency: int = Field(default=10, ge=1)
    # campaigns: targets decided per second, all campaigns together, in small batches
    campaign_rate_per_s: float = Field(default=50, gt=0)

    def startup_problems(self) -> list[str]:
        problems = super().startup_problems()
        try:
            key = delivery.signing_key(self.webhook_secret)
        except ValueError as exc:
            return [*problems, f"WEBHOOK_SECRET: {exc}"]
        if self.crm_env == "production":
            problems += secret_problems("WEBHOOK_SECRET", self.webhook_secret)
            if len(key) < MIN_WEBHOOK_KEY_BYTES:
                problems.append(f"WEBHOOK_SECRET's key is under {MIN_WEBHOOK_KEY_BYTES} bytes")
        return problems

    def directory(self) -> domain.StaffDirectory:
        return domain.StaffDirectory(
            contacts={k: domain.StaffContact(v.email, v.webhook_url) for k, v in self.staff_contacts.items()},
            default_webhook_url=self.team_webhook_url,
            default_email=self.team_email,
            language=self.staff_language,
        )

    def retry_policy(self) -> domain.RetryPolicy:
        return domain.RetryPolicy(
            max_attempts=self.notification_retry_max_attempts,
            base=timedelta(milliseconds=self.notification_retry_base_ms),
            max_delay=timedelta(milliseconds=self.notification_retry_max_ms),
            jitter=self.notification_retry_jitter,
        )

    def customer_cap(self) -> domain.Cap:
        return domain.Cap(self.notification_cap_max, timedelta(seconds=self.notification_cap_window_s))

    def digest_policy(self) -> domain.DigestPolicy:
        return domain.DigestPolicy(
            window=timedelta(seconds=self.notification_digest_window_s), enabled=self.notification_digest_enabled
        )

    def staff_cap(self) -> domain.Cap:
        return domain.Cap(self.notification_staff_cap_max, timedelta(seconds=self.notification_staff_cap_window_s))
