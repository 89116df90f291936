"""Kafka client security options for the Spark Kafka source and sink.

Credentials never travel as job arguments: the job gets either environment variables
(`KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`, local) or the *resource names* of Secret Manager
secrets (Dataproc; `projects/<p>/secrets/<s>/versions/<v>`) and reads their values at start-up with
the job's service account.
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

    def spark_options(self) -> dict[str, str]:
        """`kafka.*` options for `readStream.format("kafka")` and `write.format("kafka")`."""
        options = {"kafka.security.protocol": self.security_protocol}
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
    read_secret: Callable[[str], str] = read_gcp_secret,
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
    )
