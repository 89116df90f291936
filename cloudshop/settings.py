"""Settings: one pydantic model, read from the environment and validated at start-up.

The environment variable names are the contract: CDK sets them on the Lambdas and in the Kubernetes
manifests, the local runner sets them on its child processes. Names are the upper-case field names
(`DATABASE_URL`, `ORDERS_TABLE`, ...), with no prefix, so they read the same in every place; a field
with an alias is read under its alias. Values given to the constructor win over the environment.

A plain `BaseModel` with a small environment reader (`_read_environment`), not pydantic-settings:
importing that took ~40 ms of every Lambda's cold start (a third of the 250 ms budget), for the one
thing used here, which fits in a dozen lines.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from cloudshop.estate import ESTATE


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_default=True)

    service_name: str = "cloudshop"
    environment: Literal["local", "test", "dev", "staging", "prod"] = "local"
    log_level: str = "INFO"

    # --- AWS ---------------------------------------------------------------------------------
    aws_region: str = "eu-west-1"
    # Endpoint for every AWS API (moto locally); unset in the cloud.
    aws_endpoint_url: str | None = None
    # DynamoDB and SQS may live elsewhere than the other APIs locally (each on a server of its own:
    # dynalite, ElasticMQ); unset, they fall back to `aws_endpoint_url`.
    dynamodb_endpoint_url: str | None = None
    sqs_endpoint_url: str | None = None

    # Physical resource names. Defaults are the local names (`<prefix><logical name>`); CDK sets
    # the real ones.
    resource_prefix: str = "cloudshop-"
    sessions_table: str = "cloudshop-sessions"
    carts_table: str = "cloudshop-carts"
    orders_table: str = "cloudshop-orders"
    payments_table: str = "cloudshop-payments"
    notifications_table: str = "cloudshop-notifications"
    idempotency_table: str = "cloudshop-idempotency"
    product_images_bucket: str = "cloudshop-product-images"
    order_documents_bucket: str = "cloudshop-order-documents"
    analytics_results_bucket: str = "cloudshop-analytics-results"
    order_events_queue_url: str = ""
    payment_events_queue_url: str = ""
    ses_sender: str = "orders@cloudshop.local"

    # --- SQL -----------------------------------------------------------------------------------
    database_url: str = "sqlite:///.cloudshop/cloudshop.db"
    # In the cloud the credentials live in a Secrets Manager secret (RDS JSON: username, password),
    # rotated every 30 days: DATABASE_URL then names only host, port and database, and the engine
    # (`cloudshop.sql.engine_for`) takes user and password from the secret, re-reading it when the
    # database refuses them. Each service has its own role and secret; only the migration step
    # holds the master's.
    database_secret_arn: str | None = None
    # The migration step only: database role -> ARN of the secret holding its password (JSON object).
    database_role_secrets: dict[str, str] = Field(default_factory=dict)
    # Connections a process keeps open: one per worker thread that can hold one at once (the sync
    # routes of the user and product services run on anyio's 40 threads). A smaller pool let the
    # connections beyond it be opened and closed request by request under load, each a new
    # PostgreSQL backend. Opened only when needed: a Lambda sandbox, one request at a time, opens one.
    db_pool_size: int = Field(default=40, ge=1, le=100)

    # --- Event stream ----------------------------------------------------------------------------
    # Kafka when set; otherwise the embedded file log under `event_log_dir`.
    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    # `AWS_MSK_IAM` on MSK (with SASL_SSL): the pod's IAM role signs in, no password exists.
    kafka_sasl_mechanism: Literal["AWS_MSK_IAM"] | None = None
    event_log_dir: str = ".cloudshop/events"
    orders_topic: str = "orders"
    analytics_topic: str = "analytics-results"

    # --- Auth ------------------------------------------------------------------------------------
    # PEM keys. Only the user service holds the private key.
    jwt_private_key: SecretStr | None = None
    jwt_public_key: str = ""
    jwt_issuer: str = "cloudshop"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    refresh_token_ttl_seconds: int = Field(default=14 * 86400, ge=300)
    # Service-token secrets, one per calling pair (`order-product`: the order service signs its calls
    # to the product service with it, and the product service checks them). A process is given only
    # the pairs it is a party to (`ESTATE.token_pairs_of`); see `cloudshop.auth.InternalTokens`.
    internal_token_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # Where the secrets above live in the cloud (the private key; pair -> secret ARN); read once at
    # start-up by `load_secrets`.
    jwt_private_key_secret_arn: str | None = None
    internal_token_secret_arns: dict[str, str] = Field(default_factory=dict)
    # Password guesses (logins, password changes) are counted before the password is checked, in
    # sliding windows (`functions.user.model.Limit`); a success is not counted. Per client address,
    # the primary brake: 10 per 15 minutes.
    login_address_max_failures: int = Field(default=10, ge=1, le=10_000)
    login_address_window_seconds: int = Field(default=900, ge=1, le=86_400)
    # Per account (email): 50 per hour, above what one address can reach (about 36 an hour, simulated
    # at full speed), so that no single address can lock an account out; it still caps guesses
    # spread over many addresses.
    login_max_failures: int = Field(default=50, ge=1, le=10_000)
    login_failure_window_seconds: int = Field(default=3600, ge=1, le=7 * 86_400)
    # Registrations answered "already exists" (409), per client address: 10 per hour.
    register_address_max_conflicts: int = Field(default=10, ge=1, le=10_000)
    register_address_window_seconds: int = Field(default=3600, ge=1, le=86_400)
    # A session ends this long after its login however often it is refreshed (the refresh TTL
    # above is the idle limit).
    session_lifetime_seconds: int = Field(default=30 * 86400, ge=300, le=365 * 86400)
    # A refresh token just rotated still answers, with its successor, for this long (two tabs
    # refreshing at once); a later reuse ends the session.
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=60)
    admin_email: str | None = Field(default=None, alias="CLOUDSHOP_ADMIN_EMAIL")
    admin_password: SecretStr | None = Field(default=None, alias="CLOUDSHOP_ADMIN_PASSWORD")

    # --- Service discovery -------------------------------------------------------------------------
    user_service_url: str = "http://127.0.0.1:8001"
    product_service_url: str = "http://127.0.0.1:8002"
    order_service_url: str = "http://127.0.0.1:8003"
    payment_service_url: str = "http://127.0.0.1:8004"
    notification_service_url: str = "http://127.0.0.1:8005"
    service_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    service_retries: int = Field(default=2, ge=0, le=5)

    # --- Overload (cloudshop.web.InFlightLimiter) ---------------------------------------------------
    # Requests one process works on at once; the next is refused at once with a 503 and Retry-After.
    # 64: an async request mostly waits on the network, so 64 keep a core busy while the work queued
    # behind the limit stays small (64 x ~5 ms of CPU per request: about 0.3 s of queueing at worst).
    max_in_flight_requests: int = Field(default=64, ge=1, le=10_000)
    # The liveness probe's own port (`cloudshop.liveness`): `/healthz` answered by a process of its own, never
    # behind the event loop's work. Unset: no such port (a Lambda function, tests).
    health_port: int | None = Field(default=None, ge=1, le=65_535)
    health_host: str = "127.0.0.1"
    # A loop later than this is stuck, not busy: the probe then fails and the pod is restarted.
    liveness_max_loop_lag_seconds: float = Field(default=10.0, gt=0, le=300)
    # What a refused caller is told to wait (`retry-after-ms`; `Retry-After` rounds it up to seconds).
    overload_retry_after_ms: int = Field(default=200, ge=1, le=60_000)
    # Each readiness check's own limit; /readyz answers within 0.1 s whatever it (see web.Readiness).
    readiness_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    # The gateway: a session seen active is trusted this long, so a logout stops its access token
    # at the gateway within this bound (per gateway process).
    session_cache_seconds: float = Field(default=2.0, ge=0, le=30)
    # The gateway's budget per upstream call: above the services' own (`service_timeout_seconds`),
    # below its callers' (browsers, k6: 30-60 s).
    gateway_upstream_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    gateway_max_in_flight_requests: int = Field(default=256, ge=1, le=10_000)

    # --- Checkout ----------------------------------------------------------------------------------
    currency: str = Field(default="INR", pattern=r"^[A-Z]{3}$")
    cart_ttl_seconds: int = 7 * 86400
    # Start the outbox relay inside the order (and the payment) service process.
    outbox_relay_enabled: bool = True
    outbox_relay_interval_seconds: float = Field(default=0.5, gt=0)
    # Consume `payment-events` (a full refund moves the order to REFUNDED) in the order service.
    payment_events_consumer_enabled: bool = True
    # Orders left PENDING_PAYMENT this long (a checkout that lost the payment service and was never
    # retried) are settled by a background sweeper in the order service.
    abandoned_order_seconds: float = Field(default=120, ge=0)
    abandoned_order_sweep_interval_seconds: float = Field(default=30, gt=0)
    abandoned_order_sweeper_enabled: bool = True
    # A stock reservation no order has committed is released after this long (by the order sweeper,
    # when no order was written for it): far above any checkout request, so only a checkout that
    # failed between reserving and writing its order leaves one to expire.
    reservation_ttl_seconds: float = Field(default=900, ge=0)
    # The simulated payment provider: how long the `pm_card_slow` test token takes to capture.
    payment_slow_charge_seconds: float = Field(default=2.0, ge=0, le=30)

    # --- Tracing (cloudshop.tracing) ----------------------------------------------------------------
    # Off by default: the local runner, CDK and the overlays turn it on.
    tracing_enabled: bool = False
    # Share of new traces kept (a trace started upstream keeps its caller's decision).
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # Locally: spans appended as JSON lines here (`cloudshop trace` reads them).
    trace_file: str | None = None
    # In the cloud: OTLP/HTTP to the collector (ADOT on EKS, the ADOT layer's on Lambda).
    otel_exporter_otlp_endpoint: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_environment(cls, given: Any) -> Any:
        # The environment fills in every field the caller did not give; names match case-insensitively.
        if not isinstance(given, dict):
            return given
        environment = {name.lower(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in given or name in given or key.lower() not in environment:
                continue
            raw = environment[key.lower()]
            # Mappings and lists travel as JSON, as they do in CDK's and the manifests' environment.
            values[key] = json.loads(raw) if typing.get_origin(field.annotation) in (dict, list) else raw
        return {**values, **given}

    @field_validator("internal_token_secrets", "internal_token_secret_arns", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        # The environment carries these as JSON objects; so may a caller handing over raw values.
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_driver(cls, value: str) -> str:
        # `postgresql://` (what RDS secrets and pg tools hand out) means psycopg 3 here.
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @property
    def dynamodb_endpoint(self) -> str | None:
        return self.dynamodb_endpoint_url or self.aws_endpoint_url

    @property
    def sqs_endpoint(self) -> str | None:
        return self.sqs_endpoint_url or self.aws_endpoint_url

    def endpoint_for(self, api: str) -> str | None:
        """The endpoint of one AWS API (`dynamodb`, `sqs`, `s3`, ...); None means AWS's own."""
        return {"dynamodb": self.dynamodb_endpoint, "sqs": self.sqs_endpoint}.get(api, self.aws_endpoint_url)

    def table_name(self, logical: str) -> str:
        table = ESTATE.table(logical)
        return str(getattr(self, table.settings_field))

    def bucket_name(self, logical: str) -> str:
        return str(getattr(self, ESTATE.bucket(logical).settings_field))


def resource_settings(prefix: str) -> dict[str, str]:
    """The physical names of every table and bucket for a resource prefix, as environment variables."""
    env: dict[str, str] = {"RESOURCE_PREFIX": prefix}
    for table in ESTATE.tables:
        env[table.settings_field.upper()] = prefix + table.name
    for bucket in ESTATE.buckets:
        env[bucket.settings_field.upper()] = prefix + bucket.name
    return env


class SecretUnavailable(RuntimeError):
    """A secret the environment names by ARN cannot be read: the process must not start without it."""


def secret_reader(settings: Settings) -> Callable[[str], str]:
    """`fetch(arn) -> SecretString` on Secrets Manager; any failure names the secret it could not read."""

    def fetch(arn: str) -> str:
        # Imported on the first read, not with the settings: a process given its secrets as values
        # (locally, in the tests) never needs the client.
        from cloudshop.aws_sync import SecretRefused, secrets_manager_for
        from cloudshop.errors import DependencyUnavailable

        try:
            answer = secrets_manager_for(settings).get_secret_value(SecretId=arn)
        except SecretRefused as exc:
            raise SecretUnavailable(f"cannot read secret {arn}: {exc.code}: {exc.message or exc}") from exc
        except DependencyUnavailable as exc:
            raise SecretUnavailable(f"cannot read secret {arn}: {exc}") from exc
        if "SecretString" not in answer:
            raise SecretUnavailable(f"secret {arn} holds no SecretString")
        return str(answer["SecretString"])

    return fetch


def load_secrets(settings: Settings, *, fetch: Callable[[str], str] | None = None) -> Settings:
    """Fill in secret values that the environment names only by ARN (the cloud's way).

    Values already present win, so the local runner and the tests, which set them directly, never
    reach Secrets Manager. The database's credentials are not read here: they rotate under a running
    process, so the engine owns them (`cloudshop.sql.engine_for`).
    """
    fetch = fetch or secret_reader(settings)

    def read(field: str, arn: str) -> str:
        try:
            return fetch(arn)
        except SecretUnavailable as exc:
            raise SecretUnavailable(f"{field.upper()}: {exc}") from exc

    updates: dict[str, object] = {}
    held = settings.internal_token_secrets
    unread = {pair: arn for pair, arn in settings.internal_token_secret_arns.items() if pair not in held}
    if unread:
        updates["internal_token_secrets"] = {
            **held,
            **{pair: SecretStr(read(f"internal_token_secret_arns[{pair}]", arn)) for pair, arn in unread.items()},
        }
    if settings.jwt_private_key_secret_arn and not settings.jwt_private_key:
        updates["jwt_private_key"] = SecretStr(read("jwt_private_key_secret_arn", settings.jwt_private_key_secret_arn))
    return settings.model_copy(update=updates) if updates else settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_secrets(Settings())
