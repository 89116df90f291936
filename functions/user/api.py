"""HTTP transport of the user service."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cloudshop.errors import RateLimited
from cloudshop.estate import API_PREFIX
from cloudshop.web import CurrentPrincipal, problem_response
from functions.user.model import NAME_MAX, PASSWORD_MAX
from functions.user.service import UserService

THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many attempts: a problem with `Retry-After` (seconds) and `retry_after_ms`."}
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RegisterIn(Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)
    name: str = Field(min_length=1, max_length=NAME_MAX)


class LoginIn(Strict):
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class RefreshIn(Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutIn(Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class ProfilePatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    password: str | None = Field(default=None, min_length=1, max_length=PASSWORD_MAX)
    current_password: str | None = Field(default=None, max_length=PASSWORD_MAX)


class UserOut(BaseModel):
    id: str
    email: str
    name: str
    role: str
    created_at: str


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


def client_address(request: Request) -> str:
    """The address the throttles count a request against.

    In Lambda it is the TCP peer API Gateway saw (`requestContext.http.sourceIp`, which Mangum hands
    over as `request.client`); X-Forwarded-For is the caller's own claim there and is ignored.
    Behind the local gateway the peer is loopback, and the gateway appends the address it saw as the
    last X-Forwarded-For entry: that entry, and only that one, is used. IPv6 addresses count per /64,
    the block one subscriber usually holds.
    """
    peer = request.client.host if request.client else ""
    if _is_loopback(peer):
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        peer = forwarded.rsplit(",", 1)[-1].strip() or peer
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install_rate_limit_answer(app: FastAPI) -> None:
    """A throttled answer tells when to come back: `Retry-After` (whole seconds) and `retry-after-ms`."""

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
        retry_after_ms = int(exc.extra.get("retry_after_ms", 1000))
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_ms / 1000))), "retry-after-ms": str(retry_after_ms)}
        return problem_response(exc.status, exc.problem(), headers)


def router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    def service(request: Request) -> UserService:
        return request.app.state.users  # type: ignore[no-any-return]

    @api.post("/auth/register", status_code=201, response_model=UserOut, tags=["auth"], responses=THROTTLED)
    def register(body: RegisterIn, request: Request) -> dict[str, str]:
        user = service(request).register(
            email=body.email, password=body.password, name=body.name, client=client_address(request)
        )
        return user.public()

    @api.post("/auth/login", response_model=TokensOut, tags=["auth"], responses=THROTTLED)
    def login(body: LoginIn, request: Request) -> dict[str, object]:
        tokens = service(request).login(email=body.email, password=body.password, client=client_address(request))
        return tokens.as_dict()

    @api.post("/auth/refresh", response_model=TokensOut, tags=["auth"])
    def refresh(body: RefreshIn, request: Request) -> dict[str, object]:
        return service(request).refresh(body.refresh_token).as_dict()

    @api.post("/auth/logout", status_code=204, tags=["auth"])
    def logout(body: LogoutIn, request: Request) -> None:
        service(request).logout(body.refresh_token)

    @api.get("/users/me", response_model=UserOut, tags=["users"])
    def me(principal: CurrentPrincipal, request: Request) -> dict[str, str]:
        return service(request).users.get(principal.user_id).public()

    @api.patch("/users/me", response_model=UserOut, tags=["users"], responses=THROTTLED)
    def patch_me(body: ProfilePatch, principal: CurrentPrincipal, request: Request) -> dict[str, str]:
        user = service(request).update_profile(
            principal.user_id,
            name=body.name,
            password=body.password,
            current_password=body.current_password,
            session_id=principal.session_id,
            client=client_address(request),
        )
        return user.public()

    @api.get("/users/{user_id}", response_model=UserOut, tags=["users"])
    def get_user(user_id: str, principal: CurrentPrincipal, request: Request) -> dict[str, str]:
        principal.require_admin()
        return service(request).users.get(user_id).public()

    return api
