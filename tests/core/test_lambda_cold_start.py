"""What keeps a Lambda cold start short does not change what the function does: the collector is back
on after the import, X-Ray still traces SQL, a damaged signing key is still refused, and every AWS
client of a process still comes from settings."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudshop import aws
from cloudshop.auth import TokenIssuer, TokenVerifier, generate_key_pair
from cloudshop.bench_imports import lambda_environment
from cloudshop.estate import LAMBDA_SERVICES
from cloudshop.lambda_entry import cold_start
from cloudshop.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def in_a_function(service: str, code: str, *args: str, **env: str) -> str:
    """The last line `code` prints, run in a fresh interpreter with `service`'s deployed environment
    (`lambda_environment`, plus `env`) and this repository's code."""
    environment = lambda_environment(service) | {"PYTHONPATH": str(REPO), **env}
    answer = subprocess.run(
        [sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    return answer.stdout.strip().splitlines()[-1]


def lambda_context_source(service: str) -> str:
    """Source of a `Context` class holding what the handlers read of Lambda's context object, for
    the code a test runs `in_a_function`."""
    return textwrap.dedent(
        f"""
        class Context:
            function_name = "cloudshop-bench-{service}"
            memory_limit_in_mb = 512
            invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:cloudshop-bench-{service}"
            aws_request_id = "c0ffee00-0000-4000-8000-000000000000"

            def get_remaining_time_in_millis(self):
                return 30_000
        """
    )


def test_a_cold_start_turns_the_collector_back_on_and_freezes_what_it_built() -> None:
    # Given the collector is on
    assert gc.isenabled()
    try:
        # When a handler builds its app inside `cold_start`
        with cold_start():
            paused = gc.isenabled()
            built = [{"app": index} for index in range(1000)]
        # Then the collector was paused meanwhile, is on again, and what was built is frozen
        assert not paused
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(built)
    finally:
        gc.unfreeze()


def xray_on() -> dict[str, str]:
    """This process's environment as a Lambda function's with X-Ray tracing on."""
    return {
        **os.environ,
        "AWS_LAMBDA_FUNCTION_NAME": "cloudshop-test-user",
        "LAMBDA_TASK_ROOT": str(REPO),
        "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
        "POWERTOOLS_TRACE_DISABLED": "false",
    }


def test_xray_traces_a_boto_client_made_after_the_handler_without_loading_botocore_before() -> None:
    # Given a Lambda environment with X-Ray on and an app that makes AWS clients only on some routes
    # (Powertools imports the bare botocore package for its user agent)
    script = textwrap.dedent(
        """
        import sys
        import botocore
        from fastapi import FastAPI
        from cloudshop.lambda_entry import lambda_handler

        # When the handler is built, botocore's client machinery is not loaded for X-Ray
        lambda_handler(FastAPI(), service="product")
        assert "botocore.client" not in sys.modules
        # Then a client made later, on a route that needs one, is traced all the same
        from cloudshop import aws
        from cloudshop.settings import Settings
        aws.client("s3", Settings(aws_endpoint_url="http://127.0.0.1:9"))
        from aws_xray_sdk.ext.botocore.patch import _xray_traced_botocore
        from botocore.client import BaseClient
        assert BaseClient._make_api_call._self_wrapper is _xray_traced_botocore
        print("traced")
        """
    )
    answer = subprocess.run(
        [sys.executable, "-c", script], env=xray_on(), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert answer.stdout.strip() == "traced"


def test_a_failed_cold_start_still_turns_the_collector_back_on() -> None:
    try:
        with pytest.raises(RuntimeError), cold_start():
            raise RuntimeError("settings are invalid")
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_xray_traces_sql_statements_without_importing_sqlalchemy(tmp_path: Path) -> None:
    # Given a Lambda environment with X-Ray on, inside an invocation (its trace header), and an engine
    # built before the handler, as a function's app builds its own
    script = textwrap.dedent(
        f"""
        import sys
        from fastapi import FastAPI
        from cloudshop.lambda_entry import lambda_handler
        from cloudshop.sql import make_engine

        engine = make_engine("sqlite:///{tmp_path / "xray.db"}")
        # When the handler is built and a statement runs
        lambda_handler(FastAPI(), service="user")
        from aws_xray_sdk.core import xray_recorder
        sent = []
        xray_recorder.emitter.send_entity = lambda entity: sent.append(entity.to_dict())
        with engine.single() as connection:
            assert connection.execute("SELECT 1").scalar() == 1
        # Then each statement is an X-Ray subsegment with its SQL, and SQLAlchemy was not imported for it
        queries = [entity["sql"]["sanitized_query"] for entity in sent if entity.get("namespace") == "remote"]
        assert queries == ["BEGIN IMMEDIATE", "SELECT 1"], sent
        assert all(entity["sql"]["database_type"] == "SQLite" for entity in sent), sent
        assert not [m for m in sys.modules if m.startswith("sqlalchemy")]
        print("traced")
        """
    )
    environment = xray_on() | {
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    }
    answer = subprocess.run(
        [sys.executable, "-c", script], env=environment, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert answer.stdout.strip() == "traced"


def test_an_issuer_signs_tokens_the_public_key_verifies() -> None:
    private, public = generate_key_pair()
    token = TokenIssuer(private, issuer="cloudshop", access_ttl_seconds=60).access_token(
        user_id="u1", role="customer", email="a@example.com", session_id="s1"
    )
    assert TokenVerifier(public, issuer="cloudshop").verify(token).user_id == "u1"


def test_an_issuer_refuses_a_damaged_signing_key() -> None:
    # Given a private key whose private exponent was damaged (its structure still parses)
    private, _ = generate_key_pair()
    key = serialization.load_pem_private_key(private.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.private_numbers()
    damaged = rsa.RSAPrivateNumbers(
        p=numbers.p,
        q=numbers.q,
        d=numbers.d ^ 2,
        dmp1=numbers.dmp1 ^ 2,
        dmq1=numbers.dmq1,
        iqmp=numbers.iqmp,
        public_numbers=numbers.public_numbers,
    ).private_key(unsafe_skip_rsa_key_validation=True)
    pem = damaged.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    # Then the issuer refuses it before it signs anything
    with pytest.raises(ValueError, match="damaged"):
        TokenIssuer(pem, issuer="cloudshop", access_ttl_seconds=60)


def test_clients_share_one_session_and_keep_their_own_endpoints_and_region() -> None:
    settings = Settings(
        aws_region="ap-south-1",
        aws_endpoint_url="http://127.0.0.1:1",
        dynamodb_endpoint_url="http://127.0.0.1:2",
        sqs_endpoint_url="http://127.0.0.1:3",
    )
    s3 = aws.client("s3", settings)
    sqs = aws.client("sqs", settings)
    dynamodb = aws.client("dynamodb", settings)
    assert aws.client("sqs", settings) is sqs
    assert s3.meta.endpoint_url == "http://127.0.0.1:1"
    assert dynamodb.meta.endpoint_url == "http://127.0.0.1:2"
    assert sqs.meta.endpoint_url == "http://127.0.0.1:3"
    assert s3.meta.region_name == sqs.meta.region_name == dynamodb.meta.region_name == "ap-south-1"
    other_region = aws.client("sqs", Settings(aws_region="eu-central-1", aws_endpoint_url="http://127.0.0.1:1"))
    assert other_region.meta.region_name == "eu-central-1"


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
def test_a_function_imports_neither_botocore_clients_nor_boto3_nor_pydantic_settings(service: str) -> None:
    # Each cost the cold start tens of milliseconds (botocore's client machinery and first client
    # ~90 ms, boto3 ~55, pydantic-settings ~40): the functions' DynamoDB and Secrets Manager calls go
    # through cloudshop.aws_sync, and what needs botocore (S3 images, SES, the idempotency table)
    # loads it on first use.
    probe = (
        f"import sys; import functions.{service}.handler; "
        "print(sorted(m for m in ('boto3', 'botocore.client', 's3transfer', 'pydantic_settings') if m in sys.modules))"
    )
    assert in_a_function(service, probe) == "[]"


# PyJWT, with the `cryptography.x509` its algorithms import, was ~20 ms of these functions' cold start,
# though their busiest paths check no token: the catalog's reads, the notification function's SQS
# batches. `cloudshop.auth` imports it with the first token signed or verified; the user function,
# which signs or verifies one on nearly every route, still imports it with its issuer.
TOKENLESS_STARTS = ("product", "notification")
PYJWT_MODULES = ("jwt", "cryptography.x509")


@pytest.mark.parametrize("service", TOKENLESS_STARTS)
def test_a_function_whose_busiest_path_checks_no_token_starts_without_pyjwt(service: str) -> None:
    probe = (
        f"import sys; import functions.{service}.handler; "
        f"print(sorted(m for m in {PYJWT_MODULES!r} if m in sys.modules))"
    )
    assert in_a_function(service, probe) == "[]"


def test_the_product_function_serves_its_catalog_without_pyjwt_and_still_checks_an_admins_token(
    tmp_path: Path,
) -> None:
    # Given the product function on a migrated database, and an admin's token signed with the key
    # pair of its environment
    from cloudshop.schema import apply_schema
    from cloudshop.sql import make_engine

    database = f"sqlite:///{tmp_path / 'catalog.db'}"
    schema = make_engine(database)
    apply_schema(schema)
    schema.dispose()
    environment = lambda_environment("product")  # one fresh key pair: the function's, and the admin's signer
    keys = {name: environment[name] for name in ("JWT_PRIVATE_KEY", "JWT_PUBLIC_KEY")}
    admin = TokenIssuer(keys["JWT_PRIVATE_KEY"], issuer="cloudshop", access_ttl_seconds=300).access_token(
        user_id="admin-1", role="admin", email="admin@example.com", session_id="s-1"
    )
    listing = json.loads((REPO / "tests" / "events" / "apigw_v2_list_products.json").read_text())
    deletion = json.loads(json.dumps(listing))
    deletion["routeKey"] = deletion["requestContext"]["routeKey"] = "DELETE /api/v1/products/{id}"
    deletion["rawPath"] = deletion["requestContext"]["http"]["path"] = "/api/v1/products/no-such-product"
    deletion["requestContext"]["http"]["method"] = "DELETE"
    deletion["rawQueryString"], deletion["queryStringParameters"] = "", {}
    probe = lambda_context_source("product") + textwrap.dedent(
        f"""
        import json, sys
        from functions.product.handler import handler

        def loaded():
            return sorted(m for m in {PYJWT_MODULES!r} if m in sys.modules)

        listing, deletion = json.loads(sys.argv[1]), json.loads(sys.argv[2])
        answers = {{"listing": handler(listing, Context())["statusCode"], "after_listing": loaded()}}
        for name, token in (("forged", "Bearer not.a.token"), ("admin", "Bearer " + sys.argv[3])):
            deletion["headers"]["authorization"] = token
            answers[name] = handler(deletion, Context())["statusCode"]
        print(json.dumps(answers))
        """
    )
    # When it serves a catalog read, then a deletion with a forged token and with the admin's token
    outcome = json.loads(
        in_a_function("product", probe, json.dumps(listing), json.dumps(deletion), admin, DATABASE_URL=database, **keys)
    )
    # Then the read loaded no PyJWT, the forged token is refused, and the admin's is verified (the
    # product it names does not exist)
    assert outcome == {"listing": 200, "after_listing": [], "forged": 401, "admin": 404}, outcome


# A request of each function that reaches the database: the product list, and the user service's
# readiness check (its routes that read users also call DynamoDB, which this environment cannot reach).
SQL_REQUESTS = {"product": "/api/v1/products", "user": "/readyz"}


@pytest.mark.parametrize("service", sorted(SQL_REQUESTS))
def test_a_function_imports_no_sqlalchemy_to_start_nor_to_serve_a_request(service: str, tmp_path: Path) -> None:
    # SQLAlchemy was ~140 ms of the cold start: the functions talk to the database through
    # cloudshop.sql, over the drivers themselves; only the migrations (never run here) use it.
    from cloudshop.schema import apply_schema
    from cloudshop.sql import make_engine

    database = f"sqlite:///{tmp_path / 'serving.db'}"
    schema = make_engine(database)
    apply_schema(schema)
    schema.dispose()
    event = json.loads((REPO / "tests" / "events" / "apigw_v2_list_products.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = SQL_REQUESTS[service]
    event["rawQueryString"], event["queryStringParameters"] = "", {}
    probe = lambda_context_source(service) + textwrap.dedent(
        f"""
        import json, sys
        from cloudshop import sql
        operations = []
        sql.PROCESS_HOOKS.append(lambda statement: operations.append(statement.operation))
        from functions.{service}.handler import handler
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic"))

        answer = handler(json.loads(sys.argv[1]), Context())
        served = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic"))
        print(json.dumps({{"status": answer["statusCode"], "sql": operations, "loaded": loaded, "served": served}}))
        """
    )
    outcome = json.loads(in_a_function(service, probe, json.dumps(event), DATABASE_URL=database))
    assert "SELECT" in outcome["sql"], outcome  # the request did reach the database
    assert outcome["loaded"] == outcome["served"] == [], outcome
    if service == "product":
        assert outcome["status"] == 200, outcome


def test_neither_settings_nor_aws_clients_import_boto3_or_pydantic_settings() -> None:
    # Each costs a Lambda's cold start tens of milliseconds for nothing the functions use.
    probe = (
        "import sys; from cloudshop import aws; from cloudshop.settings import Settings; "
        "aws.client('dynamodb', Settings(aws_endpoint_url='http://127.0.0.1:1')); "
        "print(sorted(m for m in ('boto3', 's3transfer', 'pydantic_settings') if m in sys.modules))"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "[]"


# The notification function's queue is its busiest trigger: a sandbox it starts does not load FastAPI
# (the HTTP app is built by the first HTTP event; tests/services/test_notification_handler.py).
HTTP_ONLY_MODULES = ("fastapi", "starlette.applications", "mangum", "prometheus_client")


def test_the_notification_function_starts_without_fastapi_and_still_traces_and_logs_its_batches() -> None:
    probe = textwrap.dedent(
        f"""
        import json, logging, sys
        import functions.notification.handler
        from cloudshop import tracing

        print(json.dumps({{
            "loaded": sorted(m for m in {HTTP_ONLY_MODULES!r} if m in sys.modules),
            "traced": tracing.enabled(),
            "formatter": type(logging.getLogger().handlers[0].formatter).__name__,
        }}))
        """
    )
    # No FastAPI, yet the process is set up as the app would set it up: spans on, JSON log lines.
    assert json.loads(in_a_function("notification", probe)) == {
        "loaded": [],
        "traced": True,
        "formatter": "JsonFormatter",
    }
