"""HTTP transport of the notification service: a customer's own notifications."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from cloudshop.estate import API_PREFIX
from cloudshop.web import CurrentPrincipal
from functions.notification.service import NotificationService


class NotificationOut(BaseModel):
    id: str
    event_type: str
    order_id: str
    title: str
    message: str
    occurred_at: str
    created_at: str


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


def router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    def service(request: Request) -> NotificationService:
        return request.app.state.notifications  # type: ignore[no-any-return]

    @api.get("/notifications", response_model=NotificationPage, tags=["notifications"])
    def list_notifications(
        principal: CurrentPrincipal,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    ) -> dict[str, Any]:
        items, next_cursor = service(request).list_for(principal.user_id, limit=limit, cursor=cursor)
        return {"items": [n.as_dict() for n in items], "next_cursor": next_cursor}

    return api
