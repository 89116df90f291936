"""HTTP transport of the user service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from cloudshop.auth import bearer_token
from cloudshop.estate import API_PREFIX
from cloudshop.web import CurrentPrincipal
from functions.user.model import NAME_MAX, PASSWORD_MAX
from functions.user.service import UserService


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
    refresh_token: str | None = Field(default=None, min_length=1, max_length=200)


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


def router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    def service(request: Request) -> UserService:
        return request.app.state.users  # type: ignore[no-any-return]

    @api.post("/auth/register", status_code=201, response_model=UserOut, tags=["auth"])
    def register(body: RegisterIn, request: Request) -> dict[str, str]:
        return service(request).register(email=body.email, password=body.password, name=body.name).public()

    @api.post("/auth/login", response_model=TokensOut, tags=["auth"])
    def login(body: LoginIn, request: Request) -> dict[str, object]:
        return service(request).login(email=body.email, password=body.password).as_dict()

    @api.post("/auth/refresh", response_model=TokensOut, tags=["auth"])
    def refresh(body: RefreshIn, request: Request) -> dict[str, object]:
        return service(request).refresh(body.refresh_token).as_dict()

    @api.post("/auth/logout", status_code=204, tags=["auth"])
    def logout(
        request: Request,
        body: LogoutIn | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        session_id = None
        if authorization and not (body and body.refresh_token):
            session_id = request.app.state.verifier.verify(bearer_token(authorization)).session_id
        service(request).logout(refresh_token=body.refresh_token if body else None, session_id=session_id)

    @api.get("/users/me", response_model=UserOut, tags=["users"])
    def me(principal: CurrentPrincipal, request: Request) -> dict[str, str]:
        return service(request).users.get(principal.user_id).public()

    @api.patch("/users/me", response_model=UserOut, tags=["users"])
    def patch_me(body: ProfilePatch, principal: CurrentPrincipal, request: Request) -> dict[str, str]:
        user = service(request).update_profile(
            principal.user_id, name=body.name, password=body.password, current_password=body.current_password
        )
        return user.public()

    @api.get("/users/{user_id}", response_model=UserOut, tags=["users"])
    def get_user(user_id: str, principal: CurrentPrincipal, request: Request) -> dict[str, str]:
        principal.require_admin()
        return service(request).users.get(user_id).public()

    return api
