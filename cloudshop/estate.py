"""The estate: every data resource and the gateway route table, declared once.

CDK (`cdk/`) builds the cloud from these declarations; the local runner and the test fixtures build
the local estate (moto, DynamoDB, SQLite/PostgreSQL) from the very same objects. Nothing here talks to
AWS: `cloudshop.local.provision` and the CDK constructs are the two realisations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

KeyType = Literal["S", "N"]
ServiceName = Literal["user", "product", "order", "payment", "notification"]


@dataclass(frozen=True)
class Key:
    name: str
    type: KeyType = "S"


@dataclass(frozen=True)
class Index:
    """A global secondary index (projection ALL)."""

    name: str
    partition_key: Key
    sort_key: Key | None = None


@dataclass(frozen=True)
class Table:
    """A DynamoDB table. `name` is logical; the physical name is `<prefix><name>`."""

    name: str
    partition_key: Key
    sort_key: Key | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None
    # Tables whose loss loses money or orders get point-in-time recovery and are retained.
    critical: bool = False
    settings_field: str = ""

    def attribute_definitions(self) -> list[Key]:
        keys = [self.partition_key, self.sort_key]
        for index in self.indexes:
            keys += [index.partition_key, index.sort_key]
        unique: dict[str, Key] = {}
        for key in keys:
            if key is not None:
                unique.setdefault(key.name, key)
        return list(unique.values())


@dataclass(frozen=True)
class Bucket:
    name: str
    versioned: bool = False
    # Days after which objects expire; None keeps them.
    expire_after_days: int | None = None
    settings_field: str = ""
    # Browsers upload into it straight, with a presigned POST the service hands out (admin images).
    browser_uploads: bool = False


@dataclass(frozen=True)
class Queue:
    name: str
    dead_letter_queue: str
    max_receive_count: int = 3
    visibility_timeout_seconds: int = 30
    settings_field: str = ""


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int = 3
    retention_hours: int = 168


@dataclass(frozen=True)
class ScramClient:
    """A Kafka client outside AWS: it signs in with SASL/SCRAM-SHA-512 over TLS on MSK's public
    endpoint, and Kafka ACLs (`cloudshop.kafka_acls`) let it do exactly this and nothing else.

    `name` is its SCRAM user name. It may read `read_topics` as a member of the consumer groups whose
    names start with `group_prefix`, and write (produce to) `write_topics`. The services inside AWS
    keep IAM authentication, which ACLs do not govern.
    """

    name: str
    read_topics: tuple[str, ...] = ()
    write_topics: tuple[str, ...] = ()
    group_prefix: str = ""


@dataclass(frozen=True)
class Route:
    """One gateway route. `path` uses API Gateway syntax (`{proxy+}` matches the rest of the path).

    `public` routes need no token; `internal` routes take only a service token (`x-service-token`)
    of one of their `callers`, for a service that reaches another one through the API (the order pods
    calling the product Lambda); every other route needs a valid access token of a live session at
    the gateway. The service checks roles, ownership and service tokens again behind it. Path
    variables are API Gateway's: `{name}` is one segment, a final `{proxy+}` the rest of the path.
    """

    method: str
    path: str
    service: ServiceName
    public: bool = False
    internal: bool = False
    # Internal routes: the services whose service tokens open it (from `INTERNAL_ROUTES`).
    callers: tuple[ServiceName, ...] = ()


@dataclass(frozen=True)
class InternalRoute:
    """An operation a service offers to other services only, and the services that may call it.

    `path` is the service's own route template. A caller signs its calls to `service` with the secret
    of that one pair (`token_pair`, `cloudshop.auth.InternalTokens`), and every check admits exactly
    `callers`: the service's dependency (`cloudshop.web.InternalCaller`), the local gateway and the
    cloud's service-token authorizer. `via_gateway` routes cross the HTTP API (the order pods reach
    the product Lambda through it), so the gateway's route table carries them; the others are reached
    inside the cluster only, and the gateway answers 404 for them.
    """

    method: str
    path: str
    service: ServiceName
    callers: tuple[ServiceName, ...]
    via_gateway: bool = False


def token_pair(caller: str, callee: str) -> str:
    """The name of the secret `caller` signs its calls to `callee` with (`order-product`)."""
    return f"{caller}-{callee}"


@dataclass(frozen=True)
class Workload:
    """A container service on EKS: its scaling bounds and autoscaling targets (percent of requests)."""

    name: ServiceName
    min_replicas: int
    max_replicas: int
    cpu_target_percent: int = 70
    memory_target_percent: int = 80
    port: int = 8080
    namespace: str = "cloudshop"

    @property
    def service_account(self) -> str:
        return f"{self.name}-service"


SqlPrivilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]


@dataclass(frozen=True)
class SqlSchema:
    """One service's share of the SQL database: its Alembic scripts (`<package>/migrations`, with its
    own version table) and the login role it connects as, with only the privileges its code uses.

    The deploy's migration step (`cloudshop.schema`, run by the `SchemaMigration` custom resource) and
    the local runner apply the migrations; in the cloud the same step creates `role`, whose password
    lives in the service's own rotated secret. No service connects as the database's master user.
    """

    service: ServiceName
    package: str
    role: str
    # table -> privileges; SELECT ... FOR UPDATE needs UPDATE, which every locking table has anyway.
    grants: tuple[tuple[str, tuple[SqlPrivilege, ...]], ...]

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.service}"


@dataclass(frozen=True)
class Estate:
    tables: tuple[Table, ...]
    buckets: tuple[Bucket, ...]
    queues: tuple[Queue, ...]
    topics: tuple[Topic, ...]
    routes: tuple[Route, ...] = field(default_factory=tuple)
    workloads: tuple[Workload, ...] = field(default_factory=tuple)
    sql_schemas: tuple[SqlSchema, ...] = field(default_factory=tuple)
    internal_routes: tuple[InternalRoute, ...] = field(default_factory=tuple)
    scram_clients: tuple[ScramClient, ...] = field(default_factory=tuple)

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)

    def queue(self, name: str) -> Queue:
        return next(q for q in self.queues if q.name == name)

    def bucket(self, name: str) -> Bucket:
        return next(b for b in self.buckets if b.name == name)

    def sql_schema(self, service: str) -> SqlSchema:
        return next(s for s in self.sql_schemas if s.service == service)

    def internal_route(self, method: str, path: str, *, service: str) -> InternalRoute | None:
        """The declaration of one of `service`'s internal routes (method and route template)."""
        return next((r for r in self.internal_routes if (r.method, r.path, r.service) == (method, path, service)), None)

    @property
    def token_pairs(self) -> tuple[str, ...]:
        """Every (caller, callee) pair of the internal routes, each with a secret of its own."""
        return tuple(sorted({token_pair(c, r.service) for r in self.internal_routes for c in r.callers}))

    def token_pairs_of(self, service: str) -> tuple[str, ...]:
        """The pairs whose secret `service` holds: those it calls with and those it is called with.

        The gateway (local, or the cloud's service-token authorizer) checks the tokens of the internal
        routes on its route table, so `gateway` holds the pairs of those routes' callers and services.
        """
        if service == "gateway":
            routes = [r for r in self.routes if r.internal]
            return tuple(sorted({token_pair(c, r.service) for r in routes for c in r.callers}))
        return tuple(
            sorted(
                {
                    token_pair(caller, r.service)
                    for r in self.internal_routes
                    for caller in r.callers
                    if service in (caller, r.service)
                }
            )
        )


API_PREFIX = "/api/v1"

TABLES = (
    Table(
        name="sessions",
        partition_key=Key("pk"),
        ttl_attribute="expires_at",
        settings_field="sessions_table",
    ),
    Table(name="carts", partition_key=Key("user_id"), ttl_attribute="expires_at", settings_field="carts_table"),
    Table(
        # Each order item carries its own outbox (see eks_services/order/repository.py).
        # `outbox_pending` exists only while events wait for the relay, so `pending_outbox` is a
        # sparse index the relay queries instead of scanning.
        name="orders",
        partition_key=Key("order_id"),
        indexes=(
            Index("by_user", Key("user_id"), Key("created_at")),
            Index("pending_outbox", Key("outbox_pending"), Key("updated_at")),
            # Sparse too: orders whose payment never settled (the client gave up, a service was
            # down), for the sweeper that settles them.
            Index("awaiting_payment", Key("awaiting_payment"), Key("created_at")),
            # Every order by its status, newest first: the admin console's list of orders to fulfil.
            Index("by_status", Key("status"), Key("created_at")),
        ),
        critical=True,
        settings_field="orders_table",
    ),
    Table(
        # Each payment item carries its own outbox too (see eks_services/payment/repository.py), with
        # the same sparse `pending_outbox` index for the payment service's relay.
        name="payments",
        partition_key=Key("payment_id"),
        indexes=(
            Index("by_order", Key("order_id")),
            Index("pending_outbox", Key("outbox_pending"), Key("updated_at")),
        ),
        critical=True,
        settings_field="payments_table",
    ),
    Table(
        name="notifications",
        partition_key=Key("user_id"),
        sort_key=Key("sort_key"),
        ttl_attribute="expires_at",
        settings_field="notifications_table",
    ),
    Table(
        # Powertools idempotency records (notification handler) and Idempotency-Key records.
        name="idempotency",
        partition_key=Key("id"),
        ttl_attribute="expiration",
        settings_field="idempotency_table",
    ),
)

BUCKETS = (
    Bucket(name="product-images", settings_field="product_images_bucket", browser_uploads=True),
    Bucket(name="order-documents", versioned=True, settings_field="order_documents_bucket"),
    Bucket(name="analytics-results", expire_after_days=365, settings_field="analytics_results_bucket"),
)

QUEUES = (
    Queue(
        name="order-events",
        dead_letter_queue="order-events-dlq",
        max_receive_count=3,
        visibility_timeout_seconds=30,
        settings_field="order_events_queue_url",
    ),
    Queue(
        # `payment.refunded` from the payment service's outbox relay to the order service.
        name="payment-events",
        dead_letter_queue="payment-events-dlq",
        max_receive_count=3,
        visibility_timeout_seconds=30,
        settings_field="payment_events_queue_url",
    ),
)

TOPICS = (
    Topic(name="orders", partitions=3),
    Topic(name="analytics-results", partitions=1),
)

# The Spark job on Dataproc (GCP): reads the order events, publishes the windows. Its consumer groups
# are the job's `--kafka-group-id-prefix` (Spark names one per query); a prefix that no AWS consumer
# group shares, so the job can touch no one else's offsets.
SCRAM_CLIENTS = (
    ScramClient(
        name="analytics",
        read_topics=("orders",),
        write_topics=("analytics-results",),
        group_prefix="cloudshop-analytics-job",
    ),
)


def _routes() -> tuple[Route, ...]:
    p = API_PREFIX
    return (
        Route("POST", f"{p}/auth/register", "user", public=True),
        Route("POST", f"{p}/auth/login", "user", public=True),
        Route("POST", f"{p}/auth/refresh", "user", public=True),
        Route("POST", f"{p}/auth/logout", "user", public=True),
        Route("ANY", f"{p}/users/{{proxy+}}", "user"),
        Route("GET", f"{p}/products", "product", public=True),
        Route("GET", f"{p}/products/{{proxy+}}", "product", public=True),
        Route("POST", f"{p}/products", "product"),
        Route("ANY", f"{p}/products/{{proxy+}}", "product"),
        Route("ANY", f"{p}/cart", "order"),
        Route("ANY", f"{p}/cart/{{proxy+}}", "order"),
        Route("ANY", f"{p}/orders", "order"),
        Route("ANY", f"{p}/orders/{{proxy+}}", "order"),
        Route("ANY", f"{p}/payments/{{proxy+}}", "payment"),
        Route("GET", f"{p}/notifications", "notification"),
        Route("GET", f"{p}/analytics/windows", "order"),
        Route("GET", f"{p}/admin/orders", "order"),
        # Exact, not greedy: each internal route admits its own callers.
        *(
            Route(r.method, r.path, r.service, internal=True, callers=r.callers)
            for r in INTERNAL_ROUTES
            if r.via_gateway
        ),
    )


INTERNAL_ROUTES = (
    # Stock reservations: order (EKS) → product (Lambda) crosses the API in the cloud.
    InternalRoute("POST", f"{API_PREFIX}/internal/reservations", "product", ("order",), via_gateway=True),
    InternalRoute(
        "POST", f"{API_PREFIX}/internal/reservations/{{order_id}}/release", "product", ("order",), via_gateway=True
    ),
    InternalRoute(
        "POST", f"{API_PREFIX}/internal/reservations/{{order_id}}/commit", "product", ("order",), via_gateway=True
    ),
    # The commits of a batch of paid orders, in one call (the order service collects them for up to 0.5 s).
    InternalRoute("POST", f"{API_PREFIX}/internal/reservations/commit", "product", ("order",), via_gateway=True),
    # The order service's sweeper: reservations past their expiry, to commit or release by their order.
    InternalRoute("POST", f"{API_PREFIX}/internal/reservations/expired", "product", ("order",), via_gateway=True),
    # Payments: order → payment inside the cluster. Payment calls nobody back (issue 9), and the
    # product Lambda, facing the internet, holds no secret payment accepts.
    InternalRoute("POST", f"{API_PREFIX}/internal/payment-methods/verify", "payment", ("order",)),
    InternalRoute("POST", f"{API_PREFIX}/internal/payments", "payment", ("order",)),
    # Read before a fulfil: a payment refunded (or being refunded) in full must not ship.
    InternalRoute("GET", f"{API_PREFIX}/internal/payments/{{payment_id}}", "payment", ("order",)),
    InternalRoute("POST", f"{API_PREFIX}/internal/payments/{{payment_id}}/refunds", "payment", ("order",)),
)


# The original demo targets (15% CPU, 30% memory) live in the `demo` kustomize overlay.
WORKLOADS = (
    Workload(name="order", min_replicas=2, max_replicas=10),
    Workload(name="payment", min_replicas=2, max_replicas=8),
)

# What each SQL-using service's code does (functions/*/repository.py): nothing deletes rows (products
# are soft-deleted), and reservation lines are written once.
SQL_SCHEMAS = (
    SqlSchema(
        service="user",
        package="functions.user",
        role="cloudshop_user",
        grants=(("users", ("SELECT", "INSERT", "UPDATE")),),
    ),
    SqlSchema(
        service="product",
        package="functions.product",
        role="cloudshop_product",
        grants=(
            ("products", ("SELECT", "INSERT", "UPDATE")),
            ("reservations", ("SELECT", "INSERT", "UPDATE")),
            ("reservation_lines", ("SELECT", "INSERT")),
        ),
    ),
)

# The gateway's own health answer, the same from the local gateway and the cloud's HTTP API.
GATEWAY_HEALTH_PATHS = ("/healthz", f"{API_PREFIX}/healthz")
GATEWAY_HEALTH = {"status": "ok", "service": "gateway"}

# Lambda-hosted services; `functions.<name>.handler.handler` is each one's entry point.
LAMBDA_SERVICES: tuple[ServiceName, ...] = ("user", "product", "notification")

ESTATE = Estate(
    tables=TABLES,
    buckets=BUCKETS,
    queues=QUEUES,
    topics=TOPICS,
    routes=_routes(),
    workloads=WORKLOADS,
    sql_schemas=SQL_SCHEMAS,
    internal_routes=INTERNAL_ROUTES,
    scram_clients=SCRAM_CLIENTS,
)
