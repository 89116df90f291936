"""The only hand-made mapping of the rehearsal: cloud network addresses to loopback ports.

The templates and manifests give cloud addresses (an RDS Proxy endpoint, MSK brokers, the HTTP API's
URL, Kubernetes Service names); the harness registers, for each, the local server that stands in for
it, and every environment value is rewritten through this map just before a process starts.
Everything else in an environment is the template's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Destination:
    """Where a cloud address is served locally; `scheme` replaces the URL's scheme (TLS ends here)."""

    host: str
    port: int
    scheme: str | None = None


class NetworkMap:
    def __init__(self) -> None:
        # (cloud host, cloud port or None for any port) -> destination
        self._routes: dict[tuple[str, int | None], Destination] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, cloud_host: str, cloud_port: int | None, destination: Destination) -> None:
        self._routes[(cloud_host.lower(), cloud_port)] = destination
        self._pattern = None

    def routes(self) -> dict[str, str]:
        """A readable copy for failure messages: `host:port -> local`."""
        return {
            f"{host}:{port or '*'}": f"{d.scheme + '://' if d.scheme else ''}{d.host}:{d.port}"
            for (host, port), d in self._routes.items()
        }

    def lookup(self, host: str, port: int | None) -> Destination | None:
        host = host.lower()
        return self._routes.get((host, port)) or self._routes.get((host, None))

    def rewrite(self, value: str) -> str:
        """`value` with every known `[scheme://]host[:port]` replaced by its local destination."""
        if not self._routes:
            return value
        if self._pattern is None:
            hosts = sorted({host for host, _ in self._routes}, key=len, reverse=True)
            self._pattern = re.compile(
                r"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>"
                + "|".join(re.escape(h) for h in hosts)
                + r")(?::(?P<port>\d+))?(?![A-Za-z0-9.-])",
                re.IGNORECASE,
            )

        def replace(match: re.Match[str]) -> str:
            scheme, host, port = match["scheme"], match["host"], match["port"]
            effective = int(port) if port else DEFAULT_PORTS.get((scheme or "").lower())
            destination = self.lookup(host, effective)
            if destination is None:
                return match[0]
            address = f"{destination.host}:{destination.port}"
            if scheme:
                return f"{destination.scheme or scheme}://{address}"
            return address

        return self._pattern.sub(replace, value)

    def rewrite_environment(self, env: dict[str, str]) -> dict[str, str]:
        return {name: self.rewrite(value) for name, value in env.items()}


def local_kafka_client(env: dict[str, str]) -> dict[str, str]:
    """The one override of a template value that is not an address.

    MSK takes SASL_SSL with IAM sign-in (`AWS_MSK_IAM`): TLS to the broker, signed by the pod's role.
    The local broker speaks PLAINTEXT only and no IAM exists here, so a client configured for MSK
    talks PLAINTEXT to it instead; the rest of its Kafka settings (brokers via the network map,
    topics) stay the template's.
    """
    if env.get("KAFKA_SECURITY_PROTOCOL") != "SASL_SSL":
        return env
    local = dict(env)
    local["KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    local.pop("KAFKA_SASL_MECHANISM", None)
    return local
