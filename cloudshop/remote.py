"""`cloudshop admin create` and `cloudshop catalog load`: operations on a deployed environment.

The database lives in private subnets, so the CLI never connects to it: it invokes the environment's
database-ops function (`<prefix>database-ops`, cdk/schema.py) with the operator's AWS credentials
(`lambda:InvokeFunction` on that one function is all it needs). The function runs the same code as
`cloudshop up` (`cloudshop.operations`).

The admin's password comes from a prompt (typed twice), from standard input (`--password-stdin`, for
scripts) or from a Secrets Manager secret (`--password-secret`); there is no default.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from typing import Any

Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]

ENVIRONMENTS = ("dev", "staging", "prod")
EXIT_OK, EXIT_EXISTS, EXIT_INVALID, EXIT_FAILED = 0, 1, 2, 3


class RemoteError(RuntimeError):
    """The function could not be reached, or it failed: the message says which and why."""


def database_ops_function_name(prefix: str) -> str:
    """The database-ops function's physical name; CDK names it with this too (cdk/schema.py)."""
    return f"{prefix}database-ops"


def ops_function_name(environment: str, prefix: str | None = None) -> str:
    """The prefix defaults to `cloudshop-<env>-`, as CDK's `resource_prefix` does."""
    return database_ops_function_name(prefix or f"cloudshop-{environment}-")


def lambda_invoker(region: str | None) -> Invoke:
    """Invoke a function synchronously with boto3 (credentials and endpoint from the usual AWS sources)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    # A migration may take minutes; the CLI waits as long as the function may run.
    client = boto3.client("lambda", region_name=region, config=Config(read_timeout=900, retries={"max_attempts": 0}))

    def invoke(name: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = client.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise RemoteError(f"cannot invoke {name}: {error.get('Code')}: {error.get('Message')}") from exc
        except BotoCoreError as exc:
            raise RemoteError(f"cannot invoke {name}: {exc}") from exc
        body = json.loads(answer["Payload"].read() or b"null")
        if answer.get("FunctionError"):
            message = body.get("errorMessage") if isinstance(body, dict) else body
            raise RemoteError(f"{name} failed: {message}")
        if not isinstance(body, dict):
            raise RemoteError(f"{name} answered {body!r}")
        return body

    return invoke


def secret_value(secret_id: str, region: str | None) -> str:
    """A password kept in Secrets Manager: the plain string, or the `password` field of a JSON secret."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        text = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)["SecretString"]
    except (ClientError, BotoCoreError, KeyError) as exc:
        raise RemoteError(f"cannot read secret {secret_id}: {exc}") from exc
    try:
        document = json.loads(text)
    except ValueError:
        return str(text)
    if isinstance(document, dict) and "password" in document:
        return str(document["password"])
    return str(text)


def prompt_password() -> str:
    first = getpass.getpass("Password for the new admin: ")
    if getpass.getpass("Again: ") != first:
        raise RemoteError("the two passwords differ; nothing was changed")
    return first


def add_commands(commands: Any) -> None:
    """The `admin` and `catalog` subcommands of `cloudshop`."""

    def target(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--env", required=True, choices=ENVIRONMENTS, help="the deployed environment")
        parser.add_argument(
            "--prefix", help="resource prefix if the deploy set CLOUDSHOP_RESOURCE_PREFIX (default cloudshop-<env>-)"
        )
        parser.add_argument("--region", help="AWS region (default: AWS_REGION / your AWS profile's)")

    admin = commands.add_parser("admin", help="accounts in a deployed environment")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_commands.add_parser(
        "create",
        help="create the first admin account (password from a prompt, stdin or a Secrets Manager secret)",
        description="Create an admin account in a deployed environment. An email that is already "
        "registered is reported and left unchanged (exit 1).",
    )
    target(create)
    create.add_argument("--email", required=True)
    create.add_argument("--name", default="Administrator")
    source = create.add_mutually_exclusive_group()
    source.add_argument("--password-secret", metavar="SECRET_ID", help="read the password from this secret")
    source.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    catalog = commands.add_parser("catalog", help="the catalog of a deployed environment")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    load = catalog_commands.add_parser(
        "load", help="load the demo catalog (56 products) into an empty catalog; a non-empty one is left alone"
    )
    target(load)


def run(args: argparse.Namespace, *, invoke: Invoke | None = None) -> int:
    """Carry out `admin create` or `catalog load`; returns the exit code."""
    name = ops_function_name(args.env, args.prefix)
    # boto3 reads AWS_DEFAULT_REGION and the profile, but not AWS_REGION, which the help promises.
    args.region = args.region or os.environ.get("AWS_REGION") or None
    try:
        invoke = invoke or lambda_invoker(args.region)
        if args.command == "admin":
            if args.password_secret:
                password = secret_value(args.password_secret, args.region)
            elif args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = prompt_password()
            say(f"creating admin {args.email} in {args.env} through {name} ...")
            answer = invoke(
                name, {"command": "create-admin", "email": args.email, "password": password, "name": args.name}
            )
            codes = {"created": EXIT_OK, "exists": EXIT_EXISTS, "invalid": EXIT_INVALID}
        else:
            say(f"loading the demo catalog into {args.env} through {name} ...")
            answer = invoke(name, {"command": "load-catalog"})
            codes = {"loaded": EXIT_OK, "unchanged": EXIT_OK, "invalid": EXIT_INVALID}
    except RemoteError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    status = str(answer.get("status"))
    say(f"{status}: {answer.get('detail', '')}" + (f" (user id {answer['user_id']})" if answer.get("user_id") else ""))
    return codes.get(status, EXIT_FAILED)


def say(message: str) -> None:
    print(f"[cloudshop] {message}", file=sys.stderr, flush=True)
