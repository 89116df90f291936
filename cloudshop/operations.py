"""What every environment's database needs besides its schema: the first admin and the demo catalog.

Deployed environments run these inside the database-ops function (`cdk/runtime/database_ops.py`,
invoked by `cloudshop admin create` and `cloudshop catalog load`); `cloudshop up` calls the very same
functions at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cloudshop.errors import ValidationFailed
from cloudshop.settings import Settings
from cloudshop.sql import Engine

AdminStatus = Literal["created", "exists", "invalid"]


@dataclass(frozen=True)
class AdminResult:
    status: AdminStatus
    email: str
    detail: str
    user_id: str | None = None
    role: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "status": self.status,
            "email": self.email,
            "detail": self.detail,
            "user_id": self.user_id,
            "role": self.role,
        }


def create_admin(settings: Settings, engine: Engine, *, email: str, password: str, name: str) -> AdminResult:
    """Create an admin account; an email already registered is reported and left exactly as it is."""
    from functions.user.bootstrap import build_service

    users = build_service(settings, engine)
    try:
        user, created = users.create_admin(email=email, password=password, name=name)
    except ValidationFailed as exc:
        return AdminResult(status="invalid", email=email, detail=exc.detail)
    if created:
        return AdminResult(
            status="created", email=user.email, detail="admin account created", user_id=user.id, role=user.role
        )
    return AdminResult(
        status="exists",
        email=user.email,
        detail=f"an account with this email already exists (role {user.role}); nothing was changed",
        user_id=user.id,
        role=user.role,
    )


def load_demo_catalog(settings: Settings, engine: Engine) -> int:
    """Seed the demo catalog into an empty catalog; returns how many products were added (0: left alone)."""
    from functions.product.bootstrap import build_catalog
    from functions.product.seed import seed_catalog

    return seed_catalog(build_catalog(settings, engine))
