"""intake's own settings, on top of the shared ones."""

from eventkit.signing import public_key_of
from servicekit.inputs import Origin
from servicekit.settings import Settings, secret_problems


class IntakeSettings(Settings):
    phone_default_region: str = "US"  # how to read phone numbers written without a +country code
    # Interaction writes in flight at once; requests arriving meanwhile share the next
    # transaction (group commit, group_commit.GroupCommit).
    write_transactions: int = 4
    # Where the other services answer, for the customer export (which gathers from all four).
    case_url: str = "http://127.0.0.1:8002"
    notification_url: str = "http://127.0.0.1:8003"
    analytics_url: str = "http://127.0.0.1:8004"
    # Where the agent console (served here at /console/) calls the four services from the browser:
    # their public origins, served to the page as /console/config.json and its CSP connect-src.
    # `make run` sets them to the ports in use.
    console_intake_url: Origin = "http://127.0.0.1:8001"
    console_case_url: Origin = "http://127.0.0.1:8002"
    console_notification_url: Origin = "http://127.0.0.1:8003"
    console_analytics_url: Origin = "http://127.0.0.1:8004"
    # The dev mail sink's page (`make run` sets it): the console links to it; unset, no link.
    console_mail_url: Origin | None = None
    # How long an Idempotency-Key or client_event_id answers with the first answer; older keys
    # are forgotten (hourly), so a retry after that would be a new request.
    idempotency_ttl_hours: float = 72.0
    # Wraps every customer's data key (32 bytes, base64). Required: without it nothing personal
    # could be stored. `make run` makes one in .data/master.key; production reads a secret store.
    master_key: str
    # Interaction metadata (docs/limits.md): objects and arrays nested at most this deep (the
    # metadata object itself is level 1), at most this many keys in the whole tree, each key at
    # most this many characters. Over any of them: 422 naming the field.
    metadata_max_depth: int = 8
    metadata_max_keys: int = 256
    metadata_max_key_chars: int = 128
    # Per channel, the secret its back end signs customer references with (customer.identity_hash,
    # docs/identity-trust.md): a signed reference is verified, as from a key with identity:verify.
    # JSON, e.g. {"chat": "<secret>"}; none by default.
    identity_hmac_secrets: dict[str, str] = {}
    # Signs the events that grant or withdraw access (crm.auth.*, docs/product.md §14): a raw Ed25519
    # private key in base64, and the id the others know its public key by (AUTH_EVENT_PUBLIC_KEYS).
    # `make run` and the tests make a pair; production reads a secret store.
    auth_event_signing_key: str | None = None
    auth_event_signing_key_id: str = ""

    def startup_problems(self) -> list[str]:
        problems = super().startup_problems()
        if not self.auth_event_signing_key or not self.auth_event_signing_key_id:
            problems.append(
                "AUTH_EVENT_SIGNING_KEY and AUTH_EVENT_SIGNING_KEY_ID are not set: no API key could be made"
            )
        else:
            try:
                public = public_key_of(self.auth_event_signing_key)
            except ValueError as exc:
                problems.append(f"AUTH_EVENT_SIGNING_KEY: {exc}")
            else:
                if self.auth_event_public_keys.get(self.auth_event_signing_key_id) != public:
                    problems.append(
                        f"AUTH_EVENT_PUBLIC_KEYS has no public key {self.auth_event_signing_key_id!r} matching "
                        "AUTH_EVENT_SIGNING_KEY: the keys intake makes would be refused"
                    )
        if self.crm_env == "production":
            problems += secret_problems("MASTER_KEY", self.master_key)
            for channel, secret in self.identity_hmac_secrets.items():  # a weak one forges verified identities
                problems += secret_problems(f"IDENTITY_HMAC_SECRETS[{channel!r}]", secret)
            if not self.auth_bootstrap_admin_key:
                problems.append("AUTH_BOOTSTRAP_ADMIN_KEY is not set: nobody could make the first keys")
        return problems
