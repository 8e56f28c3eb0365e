"""Settings from environment variables, with the defaults `make run` uses.

Every service process reads the same names (one process is one service), so pointing a
service at a real Kafka cluster and PostgreSQL is a matter of setting
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL.
"""

from pydantic_settings import BaseSettings, SettingsConfigDict

from eventkit.eventstore import DEFAULT_MAX_EVENT_BYTES

DEFAULT_PORTS: dict[str, int] = {"intake": 8001, "case": 8002, "notification": 8003, "analytics": 8004}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    service_name: str = "intake"
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0: the service's default port from DEFAULT_PORTS
    database_url: str = ""  # "": postgresql://postgres@127.0.0.1:5432/crm_<service>
    database_pool_size: int = 10
    max_body_bytes: int = 1024 * 1024  # routes may allow more (intake's batch)
    # The largest event, as published (data sealed and encoded, headers, key): 413 event_too_large
    # over it. Keep it under the producer's and the broker's message limits (1 MiB by default).
    event_max_bytes: int = DEFAULT_MAX_EVENT_BYTES

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_create_topics: bool = True
    kafka_topic_partitions: int = 6
    kafka_replication_factor: int = 1
    kafka_consumer_group: str = ""  # "": crm-<service>
    kafka_session_timeout_ms: int = 10_000
    kafka_linger_ms: int = 2

    consumer_max_batch: int = 1000
    # How long the broker may hold a fetch with nothing new. It bounds how late an event is
    # seen: the client sends no second fetch to a broker while one is outstanding, so an event
    # for a partition outside that fetch waits for it to return (~30 ms median at 100 ms).
    kafka_fetch_max_wait_ms: int = 50
    consumer_commit_interval_ms: int = 500  # offsets committed at most this often (dedup covers the rest)
    outbox_batch_size: int = 1000
    outbox_poll_interval_ms: int = 500
    broker_check_interval_ms: int = 2000  # how often the relay checks the broker still has what it acked
    # /readyz fails while the event at the head of the outbox has waited longer than this.
    outbox_stuck_after_s: float = 120.0

    # Origins allowed to call this service from a browser (the agent console on another port).
    cors_allow_origins: str = ",".join(
        f"http://{host}:{port}" for host in ("127.0.0.1", "localhost") for port in (8001, 8002, 8003, 8004)
    )

    # Authentication (SPEC §9): every route but health, readiness, metrics and docs needs a key.
    auth_required: bool = True
    auth_bootstrap_admin_key: str | None = None  # an admin key known to every service, to make the first keys
    rate_limit_per_key_rps: float = 200.0
    rate_limit_per_key_burst: float = 400.0
    # Invalid keys per client address (uvicorn's proxy headers decide what the address is behind a
    # proxy): past the burst, 429 too_many_failed_logins until the bucket refills.
    auth_failures_per_address_rps: float = 1 / 6
    auth_failures_per_address_burst: float = 20.0
    # Live timeline tickets (streamtickets.py): a secret shared by the replicas of one service
    # (not set: random per process, enough for one process per service) and their lifetime.
    stream_ticket_secret: str | None = None
    stream_ticket_seconds: int = 60

    # Data keys (SPEC §9): intake holds the vault; the others ask it with a key of scope `keys`
    # (the bootstrap admin key when KEY_SERVICE_API_KEY is not set) and cache what they get.
    key_service_url: str = "http://127.0.0.1:8001"
    key_service_api_key: str | None = None
    key_cache_seconds: float = 60.0

    log_level: str = "INFO"
    otel_exporter_otlp_endpoint: str | None = None

    @classmethod
    def for_service(cls, name: str) -> "Settings":
        # SERVICE_NAME in the environment must not turn one service into another.
        settings = cls()
        settings.service_name = name
        if not settings.http_port:
            settings.http_port = DEFAULT_PORTS.get(name, 8000)
        if not settings.database_url:
            settings.database_url = f"postgresql://postgres@127.0.0.1:5432/crm_{name}"
        if not settings.kafka_consumer_group:
            settings.kafka_consumer_group = f"crm-{name}"
        return settings

    @property
    def source(self) -> str:
        """The CloudEvents `source` of everything this service produces."""
        return f"/crm/{self.service_name}"
