"""User domain: who a user is and the rules on their credentials. No framework imports here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cloudshop.errors import ValidationFailed

PASSWORD_MIN, PASSWORD_MAX = 10, 128
NAME_MAX = 100
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$")


@dataclass
class User:
    id: str
    email: str
    name: str
    role: str
    password_hash: str
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, str]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
        }


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise ValidationFailed("The email address is not valid.")
    return email


def check_password_rules(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValidationFailed(f"A password has {PASSWORD_MIN} to {PASSWORD_MAX} characters.")
    if password.isdigit() or password.isalpha():
        raise ValidationFailed("A password mixes letters with digits or symbols.")
