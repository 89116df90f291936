"""`cdk.access.SERVICE_ACCESS` against the services' code: each grants exactly the data its code touches.

A service touches a table, bucket or queue through the Settings field that names it (`settings.orders_table`),
the database through `settings.database_url`, the signing key through `settings.jwt_private_key`, Kafka
through `settings.<topic>_topic` (and `publisher_from_settings`), SES through `settings.ses_sender`. The
test reads those references from the service's package, so a grant left behind by a refactoring, or
a new table without its grant, fails here before it fails (or lingers) in the cloud.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from cdk.access import SERVICE_ACCESS, ServiceAccess
from cloudshop.estate import ESTATE, LAMBDA_SERVICES, ServiceName
from tests.cdk.conftest import REPO

pytestmark = pytest.mark.infra

TOPIC_FIELDS = {"orders_topic": "orders", "analytics_topic": "analytics-results"}


@dataclass(frozen=True)
class Touches:
    tables: frozenset[str]
    buckets: frozenset[str]
    queues: frozenset[str]
    topics: frozenset[str]
    database: bool
    signing_key: bool
    internal_token: bool
    send_email: bool


def package(service: ServiceName) -> Path:
    return REPO / ("functions" if service in LAMBDA_SERVICES else "eks_services") / service


def touched(service: ServiceName) -> Touches:
    """What the service's code reaches, read from its `settings.<field>` references."""
    source = "\n".join(path.read_text() for path in sorted(package(service).rglob("*.py")))
    fields = set(re.findall(r"\bsettings\.(\w+)", source))
    return Touches(
        tables=frozenset(t.name for t in ESTATE.tables if t.settings_field in fields),
        buckets=frozenset(b.name for b in ESTATE.buckets if b.settings_field in fields),
        queues=frozenset(q.name for q in ESTATE.queues if q.settings_field in fields),
        topics=frozenset(topic for field, topic in TOPIC_FIELDS.items() if field in fields),
        # `engine_for(settings)` reads DATABASE_URL and the service's role secret.
        database="database_url" in fields or re.search(r"\bengine_for\(settings\b", source) is not None,
        signing_key="jwt_private_key" in fields,
        # `internal_tokens_for(settings, ...)` reads the secrets of the service's token pairs.
        internal_token=re.search(r"\binternal_tokens_for\(settings\b", source) is not None,
        send_email="ses_sender" in fields,
    )


def granted(access: ServiceAccess) -> Touches:
    return Touches(
        tables=frozenset(access.write_tables + access.read_tables),
        buckets=frozenset(access.write_buckets + access.read_buckets),
        queues=frozenset(access.send_queues + access.consume_queues),
        topics=frozenset(access.produce_topics + access.consume_topics),
        database=access.database,
        signing_key=access.signing_key,
        internal_token=access.internal_token,
        send_email=access.send_email,
    )


@pytest.mark.parametrize("service", sorted(SERVICE_ACCESS))
def test_service_is_granted_exactly_what_its_code_touches(service: ServiceName) -> None:
    assert granted(SERVICE_ACCESS[service]) == touched(service)


def test_kafka_producers_are_the_services_that_build_a_publisher() -> None:
    for service, access in SERVICE_ACCESS.items():
        source = "\n".join(p.read_text() for p in package(service).rglob("*.py"))
        assert bool(access.produce_topics) == ("publisher_from_settings" in source), service


def test_every_service_of_the_estate_has_its_access_declared() -> None:
    services = set(LAMBDA_SERVICES) | {w.name for w in ESTATE.workloads}
    assert set(SERVICE_ACCESS) == services
    assert all(package(s).is_dir() for s in services)
