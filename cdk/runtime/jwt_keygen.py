"""CloudFormation custom resource: makes sure the JWT signing key exists and returns its public half.

On create and update it reads the private-key secret; when the secret does not already hold an RSA
private key (a fresh secret holds a random placeholder) it generates a 2048-bit key and stores it as
PKCS#8 PEM. Either way it answers `PublicKeyPem`, which CDK wires into `JWT_PUBLIC_KEY`, and the same
PEM escaped for a JSON string (`PublicKeyPemJsonEscaped`), for the ConfigMap CDK applies to EKS. Deleting the
resource keeps the key: the secret resource owns its lifetime. The public half is also stored in
its own secret, where the Kubernetes Secret of the EKS services is filled from. The private key never leaves Secrets
Manager except into this function's memory.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

import boto3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

KEY_SIZE = 2048


def public_pem(private_key: rsa.RSAPrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def load_private_key(text: str) -> rsa.RSAPrivateKey | None:
    """The RSA key in `text`, or None when the secret holds something else (the initial placeholder)."""
    if "PRIVATE KEY" not in text:
        return None
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except ValueError:
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def new_private_key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key, pem


def ensure_key(secrets: Any, secret_id: str, *, public_secret_id: str | None = None) -> str:
    """Public PEM of the key in the secret, generating and storing a key first when there is none.

    The public half is also written to `public_secret_id` when it differs from what is stored there.
    """
    current = secrets.get_secret_value(SecretId=secret_id).get("SecretString", "")
    key = load_private_key(current)
    if key is None:
        key, pem = new_private_key()
        secrets.put_secret_value(SecretId=secret_id, SecretString=pem)
        logger.info("generated a new JWT signing key")
    public = public_pem(key)
    if public_secret_id:
        stored = secrets.get_secret_value(SecretId=public_secret_id).get("SecretString", "")
        if stored != public:
            secrets.put_secret_value(SecretId=public_secret_id, SecretString=public)
    return public


def _respond(event: dict[str, Any], status: str, data: dict[str, str], reason: str = "") -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason or status,
            "PhysicalResourceId": event.get("PhysicalResourceId") or f"{event['LogicalResourceId']}-jwt-key",
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the pre-signed https URL CloudFormation gave us
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        response.read()


def handler(event: dict[str, Any], _context: Any) -> None:
    try:
        data: dict[str, str] = {}
        if event["RequestType"] in {"Create", "Update"}:
            properties = event["ResourceProperties"]
            data["PublicKeyPem"] = ensure_key(
                boto3.client("secretsmanager"),
                properties["PrivateKeySecretArn"],
                public_secret_id=properties.get("PublicKeySecretArn"),
            )
            # For JSON documents CloudFormation assembles around the value (the Kubernetes manifests
            # CDK applies): it pastes deploy-time values verbatim, so the newlines come pre-escaped.
            data["PublicKeyPemJsonEscaped"] = json.dumps(data["PublicKeyPem"])[1:-1]
        _respond(event, "SUCCESS", data)
    except Exception as exc:  # CloudFormation must always get an answer, or the stack hangs for an hour
        logger.exception("JWT key custom resource failed")
        _respond(event, "FAILED", {}, reason=f"{type(exc).__name__}: see the function's log")
