"""Email through SESv2's `SendEmail` (moto records it locally), with cloudshop's lean client:
building botocore's cost each queue sandbox 60-95 ms of its first batch (see `cloudshop.aws_sync`)."""

from __future__ import annotations

from cloudshop.aws_sync import BlockingSesV2
from functions.notification.model import Email


class SesMailer:
    def __init__(self, client: BlockingSesV2, *, sender: str) -> None:
        self.client = client
        self.sender = sender

    def send(self, email: Email) -> str:
        """Send one email; its SES message id. Raises `SesRefused` when SES refuses it and
        `DependencyUnavailable` when SES cannot be reached, so the event is delivered again."""
        answer = self.client.send_email(
            FromEmailAddress=self.sender,
            Destination={"ToAddresses": [email.to]},
            Content={
                "Simple": {
                    "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": email.body, "Charset": "UTF-8"}},
                }
            },
        )
        return str(answer["MessageId"])
