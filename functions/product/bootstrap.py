"""Wire the product service once: uvicorn, the Lambda handler and the tests all call `build_app`."""

from __future__ import annotations

from fastapi import FastAPI

from cloudshop import aws
from cloudshop.auth import TokenVerifier, internal_tokens_for
from cloudshop.estate import ESTATE
from cloudshop.settings import Settings
from cloudshop.sql import Engine, engine_for, ping
from cloudshop.web import create_app
from functions.product.api import router
from functions.product.repository import SqlProductRepository
from functions.product.service import CatalogService


def migrate_schema(engine: Engine) -> None:
    """This service's tables only (tests); the deploy and the runner migrate every service at once."""
    # Alembic stays out of the Lambda's import (~110 ms here): the function never migrates.
    from cloudshop.schema import apply_schema

    apply_schema(engine, schemas=(ESTATE.sql_schema("product"),))


def build_catalog(settings: Settings, engine: Engine | None = None) -> CatalogService:
    engine = engine or engine_for(settings)
    return CatalogService(
        products=SqlProductRepository(engine, reservation_ttl_seconds=settings.reservation_ttl_seconds),
        s3=aws.ClientOnFirstUse("s3", settings),
        images_bucket=settings.product_images_bucket,
        currency=settings.currency,
    )


def build_app(settings: Settings) -> FastAPI:
    catalog = build_catalog(settings)
    engine = catalog.products.engine

    return create_app(
        service="product",
        settings=settings,
        routers=[router()],
        readiness={"database": lambda: ping(engine)},
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        internal_tokens=internal_tokens_for(settings, service="product"),
        state={"catalog": catalog},
    )
