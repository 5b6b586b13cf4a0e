"""What a service that sends e-mail needs to know about the notifier, without Dagster.

`resources.notifier.NotifierResource` is the one notifier (SMTP or the outbox folder); services type
their notifier with the `Notifier` protocol below and catch `DeliveryError`, so that they import no
Dagster module and tests may hand them the resource itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol


class DeliveryError(Exception):
    """A message was not delivered (or not accepted for every recipient). Safe to log and store."""


@dataclass(frozen=True)
class Delivery:
    channel: str  # "smtp" or "outbox"
    message_id: str
    destination: str  # host:port, or the .eml path
    encrypted: bool = False  # SMTP only: the session ran over TLS (STARTTLS or smtps)


class Notifier(Protocol):
    def send(self, message: EmailMessage) -> Delivery:
        """Deliver one message; raises DeliveryError."""
        ...

    def send_ops_alert(self, subject: str, text: str, html: str | None = None) -> Delivery:
        """A message to the ops recipients; raises DeliveryError."""
        ...
