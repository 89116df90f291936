"""Email through SES (moto records it locally)."""

from __future__ import annotations

from typing import Any

from functions.notification.model import Email


class SesMailer:
    def __init__(self, client: Any, *, sender: str) -> None:
        self.client = client
        self.sender = sender

    def send(self, email: Email) -> str:
        answer = self.client.send_email(
            Source=self.sender,
            Destination={"ToAddresses": [email.to]},
            Message={
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {"Text": {"Data": email.body, "Charset": "UTF-8"}},
            },
        )
        return str(answer["MessageId"])
