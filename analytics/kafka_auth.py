"""Kafka client security options for the Spark Kafka source and sink.

Credentials never travel as job arguments: the job gets either environment variables
(`KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`, local) or the *names* of secrets and reads their values
at start-up: Secret Manager secret versions on Dataproc (`projects/<p>/secrets/<s>/versions/<v>`,
read with the job's service account), or `file:///path` for a local run (the rehearsal of the cloud
link, `tests/analytics/test_cloud_link.py`).

TLS: MSK's public endpoints present certificates the JVM's default trust store accepts, so nothing
is configured on Dataproc. A broker with a private CA (the local SCRAM listener) is trusted through
`truststore`, a PEM file of CA certificates (`--kafka-truststore` / `KAFKA_SSL_TRUSTSTORE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


@dataclass(frozen=True)
class KafkaAuth:
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    truststore: str | None = None

    def spark_options(self) -> dict[str, str]:
        """`kafka.*` options for `readStream.format("kafka")` and `write.format("kafka")`."""
        options = {"kafka.security.protocol": self.security_protocol}
        if self.truststore and self.security_protocol in ("SSL", "SASL_SSL"):
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = self.truststore
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.username and self.password):
                raise ValueError(f"{self.security_protocol} needs a SASL mechanism, a username and a password")
            module = _LOGIN_MODULES.get(self.sasl_mechanism.upper())
            if module is None:
                raise ValueError(f"unsupported SASL mechanism {self.sasl_mechanism!r}")
            options["kafka.sasl.mechanism"] = self.sasl_mechanism.upper()
            options["kafka.sasl.jaas.config"] = (
                f'{module} required username="{_jaas_escape(self.username)}" password="{_jaas_escape(self.password)}";'
            )
        return options

    def __repr__(self) -> str:
        # Never print the password (logs, tracebacks).
        return (
            f"KafkaAuth(security_protocol={self.security_protocol!r}, sasl_mechanism={self.sasl_mechanism!r}, "
            f"username={self.username!r}, password={'***' if self.password else None})"
        )


def _jaas_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def read_secret(name: str) -> str:
    """The value a secret reference names: `file:///path` (a local run) or a Secret Manager version."""
    if name.startswith("file://"):
        from pathlib import Path
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(name).path)).read_text(encoding="utf-8")
    return read_gcp_secret(name)


def read_gcp_secret(name: str) -> str:
    """The payload of a Secret Manager secret version (`projects/p/secrets/s/versions/latest`).

    google-cloud-secret-manager is installed on the Dataproc cluster by the Terraform module
    (`dataproc:pip.packages`); it is not a dependency of the local job.
    """
    from google.cloud import secretmanager  # type: ignore[import-not-found]

    client = secretmanager.SecretManagerServiceClient()
    response = client.access_secret_version(request={"name": name})
    return str(response.payload.data.decode("utf-8"))


def resolve_auth(
    *,
    security_protocol: str,
    sasl_mechanism: str | None,
    username: str | None,
    password: str | None,
    username_secret: str | None,
    password_secret: str | None,
    truststore: str | None = None,
    read_secret: Callable[[str], str] = read_secret,
) -> KafkaAuth:
    """Credentials from secret names when given, else from the plain values (environment)."""
    if username_secret:
        username = read_secret(username_secret).rstrip("\r\n")
    if password_secret:
        password = read_secret(password_secret).rstrip("\r\n")
    return KafkaAuth(
        security_protocol=security_protocol,
        sasl_mechanism=sasl_mechanism,
        username=username,
        password=password,
        truststore=truststore,
    )


# What the Kafka client says when the broker refuses a sign-in or an operation (the Java class names
# survive into the Py4J error Spark raises), and what to check then.
_KAFKA_REFUSALS = {
    "SaslAuthenticationException": (
        "Kafka refused the SASL credentials ({mechanism}, user {username!r}): the username and password "
        "secrets do not match a SCRAM user of the cluster. Check that the secrets hold the values of the "
        "cluster's AmazonMSK_ secret (analytics/README.md, 'The link between the clouds')."
    ),
    "TopicAuthorizationException": (
        "Kafka refused access to a topic for user {username!r}: the cluster's ACLs do not allow it "
        "(cloudshop.estate.SCRAM_CLIENTS declares what the job may read and write)."
    ),
    "GroupAuthorizationException": (
        "Kafka refused the consumer group for user {username!r}: its ACL allows only the groups of the "
        "job's --kafka-group-id-prefix."
    ),
    "SslAuthenticationException": (
        "The TLS handshake with Kafka failed: the broker's certificate is not trusted, or its name does "
        "not match the bootstrap address."
    ),
}


def explain_kafka_failure(error: BaseException | str, auth: KafkaAuth) -> str | None:
    """A plain sentence for a refusal by the broker found in `error` (or its text); None otherwise."""
    text = str(error)
    for marker, message in _KAFKA_REFUSALS.items():
        if marker in text:
            return message.format(mechanism=auth.sasl_mechanism, username=auth.username)
    return None
