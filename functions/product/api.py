"""HTTP transport of the product service: public catalog, admin writes, internal reservations."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cloudshop.estate import API_PREFIX
from cloudshop.paths import ID_MAX, ID_PATTERN
from cloudshop.web import AdminPrincipal, InternalCaller, ResourceId
from functions.product.model import (
    CATEGORY,
    DESCRIPTION_MAX,
    LINES_MAX,
    NAME_MAX,
    PRICE_MAX,
    QUANTITY_MAX,
    STOCK_MAX,
    Product,
    ReservationLine,
)
from functions.product.service import CatalogService


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MoneyIn(Strict):
    amount: int = Field(ge=1, le=PRICE_MAX, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class ProductIn(Strict):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    description: str = Field(default="", max_length=DESCRIPTION_MAX)
    category: str = Field(pattern=CATEGORY.pattern)
    price: MoneyIn
    stock: int = Field(ge=0, le=STOCK_MAX, strict=True)


class ProductPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    category: str | None = Field(default=None, pattern=CATEGORY.pattern)
    price: MoneyIn | None = None
    stock_adjustment: int | None = Field(
        default=None,
        ge=-STOCK_MAX,
        le=STOCK_MAX,
        strict=True,
        description="Relative change: +20 restocks, -3 writes off",
    )

    @model_validator(mode="after")
    def _no_nulls(self) -> ProductPatch:
        # A field left out keeps its value; none of them can be emptied by a null.
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null: leave a field out to keep its value")
        return self


class ImageIn(Strict):
    content_type: Literal["image/jpeg", "image/png", "image/webp"]


class Money(BaseModel):
    amount: int
    currency: str


class ProductOut(BaseModel):
    id: str
    name: str
    description: str
    category: str
    price: Money
    stock: int
    image_url: str | None
    created_at: str
    updated_at: str


class ProductPage(BaseModel):
    items: list[ProductOut]
    next_cursor: str | None


class LineIn(Strict):
    product_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=QUANTITY_MAX, strict=True)


class ReservationIn(Strict):
    order_id: str = Field(min_length=1, max_length=64)
    lines: list[LineIn] = Field(min_length=1, max_length=LINES_MAX)


class ExpiredIn(Strict):
    limit: int = Field(default=50, ge=1, le=100, strict=True)
    after: str | None = Field(default=None, min_length=1, max_length=64, description="The last order id of a page")


class ExpiredOut(BaseModel):
    order_ids: list[str]


# The order service commits its paid orders in batches it collects for up to half a second.
COMMIT_BATCH_MAX = 100
# An order id in a body, held to what the single commit's path admits (`ResourceId`), unstripped: a
# padded id is another id, not this one.
OrderId = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]


class CommitIn(Strict):
    order_ids: list[OrderId] = Field(
        min_length=1,
        max_length=COMMIT_BATCH_MAX,
        description="Orders whose reservations to commit; an id named twice counts once",
    )


class CommitOut(BaseModel):
    committed: int = Field(description="Reservations this call moved from reserved to committed")


def answer(content: Any, status_code: int = 200) -> Response:
    """A route's JSON answer, encoded by the route itself (in its worker thread).

    The routes are plain `def` (their SQL blocks), and FastAPI validates the dict a sync route returns
    against its response model in a second worker-thread hop after the endpoint's own
    (`fastapi.routing.serialize_response`): per request, a queue round trip and a thread switch more,
    and the model's validation and serialisation. A `Response` goes out as it is. Each decorator still
    names its `response_model`, so the OpenAPI document is unchanged; the dicts built here have the
    models' fields in the models' order (the same bytes pydantic wrote; the API tests check the shapes).
    """
    return JSONResponse(content, status_code=status_code)


def router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    def catalog(request: Request) -> CatalogService:
        return request.app.state.catalog  # type: ignore[no-any-return]

    def out(request: Request, product: Product) -> dict[str, Any]:
        """`ProductOut`'s fields, in its order."""
        return {
            "id": product.id,
            "name": product.name,
            "description": product.description,
            "category": product.category,
            "price": {"amount": product.price_amount, "currency": product.currency},
            "stock": product.stock,
            "image_url": catalog(request).image_url(product.image_key),
            "created_at": product.created_at.isoformat(),
            "updated_at": product.updated_at.isoformat(),
        }

    @api.get("/products", response_model=ProductPage, tags=["catalog"])
    def list_products(
        request: Request,
        q: Annotated[str | None, Query(max_length=100)] = None,
        category: Annotated[str | None, Query(pattern=CATEGORY.pattern)] = None,
        sort: Literal["newest", "price_asc", "price_desc", "name"] = "newest",
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> Response:
        items, next_cursor = catalog(request).products.search(
            q=q.strip() if q else None, category=category, sort=sort, limit=limit, cursor=cursor
        )
        return answer({"items": [out(request, p) for p in items], "next_cursor": next_cursor})

    @api.get("/products/{product_id}", response_model=ProductOut, tags=["catalog"])
    def get_product(product_id: ResourceId, request: Request) -> Response:
        return answer(out(request, catalog(request).products.get(product_id)))

    @api.post("/products", status_code=201, response_model=ProductOut, tags=["catalog"])
    def create_product(body: ProductIn, admin: AdminPrincipal, request: Request) -> Response:
        product = catalog(request).create(
            name=body.name,
            description=body.description,
            category=body.category,
            price_amount=body.price.amount,
            currency=body.price.currency,
            stock=body.stock,
        )
        return answer(out(request, product), status_code=201)

    @api.patch("/products/{product_id}", response_model=ProductOut, tags=["catalog"])
    def patch_product(product_id: ResourceId, body: ProductPatch, admin: AdminPrincipal, request: Request) -> Response:
        return answer(out(request, catalog(request).update(product_id, body.model_dump(exclude_unset=True))))

    @api.delete("/products/{product_id}", status_code=204, tags=["catalog"])
    def delete_product(product_id: ResourceId, admin: AdminPrincipal, request: Request) -> Response:
        catalog(request).products.delete(product_id)
        return Response(status_code=204)

    @api.post("/products/{product_id}/image", status_code=201, response_model=dict[str, Any], tags=["catalog"])
    def upload_image(product_id: ResourceId, body: ImageIn, admin: AdminPrincipal, request: Request) -> Response:
        return answer(catalog(request).image_upload(product_id, content_type=body.content_type), status_code=201)

    # --- internal: called by the order service with a service token -----------------------------
    @api.post("/internal/reservations", response_model=dict[str, Any], tags=["internal"])
    def reserve(body: ReservationIn, caller: InternalCaller, request: Request) -> Response:
        lines, created = catalog(request).reserve(
            body.order_id, [ReservationLine(x.product_id, x.quantity) for x in body.lines]
        )
        return answer(
            {"order_id": body.order_id, "lines": [line.as_dict() for line in lines]},
            status_code=201 if created else 200,
        )

    # Before `{order_id}/...`, and a POST although it only reads: the API routes internal reservation
    # paths for POST only.
    @api.post("/internal/reservations/expired", response_model=ExpiredOut, tags=["internal"])
    def expired(body: ExpiredIn, caller: InternalCaller, request: Request) -> Response:
        return answer({"order_ids": catalog(request).expired_reservations(limit=body.limit, after=body.after)})

    # A batch of paid orders' commits, one statement. Ids with nothing reserved (none, committed or
    # released already) are no error: a repeated batch answers 0.
    @api.post("/internal/reservations/commit", response_model=CommitOut, tags=["internal"])
    def commit_batch(body: CommitIn, caller: InternalCaller, request: Request) -> Response:
        return answer({"committed": catalog(request).commit_reservations(body.order_ids)})

    @api.post("/internal/reservations/{order_id}/release", response_model=dict[str, Any], tags=["internal"])
    def release(order_id: ResourceId, caller: InternalCaller, request: Request) -> Response:
        status, released = catalog(request).release_reservation(order_id)
        return answer({"order_id": order_id, "status": status, "released_now": released})

    @api.post("/internal/reservations/{order_id}/commit", response_model=dict[str, Any], tags=["internal"])
    def commit(order_id: ResourceId, caller: InternalCaller, request: Request) -> Response:
        return answer({"order_id": order_id, "status": catalog(request).commit_reservation(order_id)})

    return api
