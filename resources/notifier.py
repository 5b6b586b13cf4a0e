"""The one notifier: every e-mail of the project (customer alerts, ops digests, ops alerts) goes here.

Two channels:
- SMTP, when `smtp_url` is set: `smtp://user:password@host:port` (STARTTLS whenever the server
  offers it) or `smtps://…` (TLS from the first byte, port 465). Production binds the URL with
  `dg.EnvVar("AISYST_SMTP_URL")` because it carries the password.
- the outbox folder otherwise: each message becomes an `.eml` file (RFC 5322, openable in any mail
  client), written atomically.

A delivery either succeeds or raises `DeliveryError` (aisyst_pipelines/mail.py, beside the `Notifier`
protocol services type this resource with), whose text never contains the password or the URL
(callers store it in `last_error` and show it in the Dagster UI). The password is never sent over an
unencrypted connection to a host other than loopback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dagster as dg

from aisyst_pipelines.mail import Delivery, DeliveryError
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.templates import load_brand

DEFAULT_SMTP_PORTS = {"smtp": 587, "smtps": 465}


@dataclass(frozen=True)
class SmtpEndpoint:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> "SmtpEndpoint":
        """Parse `smtp[s]://[user[:password]@]host[:port]`; errors never echo the URL (it holds a password)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ValueError("AISYST_SMTP_URL is not a valid URL (expected smtp://user:password@host:port)") from None
        if parts.scheme not in DEFAULT_SMTP_PORTS or not parts.hostname:
            raise ValueError("AISYST_SMTP_URL must look like smtp://user:password@host:port (or smtps://…)")
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_SMTP_PORTS[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=parts.scheme == "smtps",
        )

    def __repr__(self) -> str:  # never the password
        return f"SmtpEndpoint(host={self.host!r}, port={self.port}, username={self.username!r}, implicit_tls={self.implicit_tls})"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class NotifierResource(dg.ConfigurableResource):
    """Sends `EmailMessage`s over SMTP, or drops them as .eml files into `outbox_dir` without SMTP."""

    smtp_url: str | None = None  # bind with dg.EnvVar("AISYST_SMTP_URL"): it carries the password
    outbox_dir: str
    sender: str  # From: for every message that has none, e.g. "Aisyst Billing <billing@aisyst.example>"
    ops_recipients: list[str]
    smtp_ca_file: str | None = None  # extra CA bundle for a private SMTP certificate authority
    timeout_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "NotifierResource":
        """SMTP when AISYST_SMTP_URL is set (bound as an EnvVar: it carries the password), else the outbox."""
        brand = load_brand(settings.brand_file)
        return cls(
            smtp_url=dg.EnvVar("AISYST_SMTP_URL") if os.environ.get("AISYST_SMTP_URL") else None,
            outbox_dir=str(settings.outbox_dir),
            sender=brand.email_from,
            ops_recipients=[address.strip() for address in (settings.ops_email or brand.ops_email).split(",") if address.strip()],
            smtp_ca_file=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        )

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # pydantic's repr (and str) would print the URL with its password.
        return [(name, "<secret>" if name == "smtp_url" and value else value) for name, value in super().__repr_args__()]

    @property
    def channel(self) -> str:
        return "smtp" if self.smtp_url else "outbox"

    # --- general API (also used for ops alerts by other domains) ----------------------------------

    def send(self, message: EmailMessage) -> Delivery:
        """Deliver one message. Fills From, Date and Message-ID when missing. Raises DeliveryError."""
        if not message["To"]:
            raise DeliveryError("message has no recipient")
        if not message["From"]:
            message["From"] = self.sender
        if not message["Date"]:
            message["Date"] = format_datetime(datetime.now(timezone.utc))
        if not message["Message-ID"]:
            message["Message-ID"] = make_msgid(domain=_domain_of(self.sender))
        if self.smtp_url:
            return self._send_smtp(message)
        return self._write_outbox(message)

    def send_ops_alert(self, subject: str, text: str, html: str | None = None) -> Delivery:
        """A message to the ops recipients: plain text, with an optional HTML alternative."""
        if not self.ops_recipients:
            raise DeliveryError("no ops recipients configured")
        message = EmailMessage()
        message["Subject"] = subject
        message["To"] = ", ".join(self.ops_recipients)
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return self.send(message)

    # --- channels -----------------------------------------------------------------------------------

    def _send_smtp(self, message: EmailMessage) -> Delivery:
        assert self.smtp_url is not None
        try:
            endpoint = SmtpEndpoint.parse(self.smtp_url)
        except ValueError as error:
            raise DeliveryError(str(error)) from None
        where = f"{endpoint.host}:{endpoint.port}"
        context = ssl.create_default_context(cafile=self.smtp_ca_file)
        try:
            if endpoint.implicit_tls:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    endpoint.host, endpoint.port, timeout=self.timeout_seconds, context=context
                )
            else:
                client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=self.timeout_seconds)
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(f"cannot connect to SMTP server {where}: {_describe(error, endpoint)}") from None
        encrypted = endpoint.implicit_tls
        try:
            client.ehlo()
            if not encrypted and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
                encrypted = True
            if endpoint.username:
                if not encrypted and not endpoint.is_loopback:
                    raise DeliveryError(
                        f"SMTP server {where} offers no STARTTLS: refusing to send the password unencrypted"
                    )
                client.login(endpoint.username, endpoint.password or "")
            refused = client.send_message(message)
        except DeliveryError:
            _close(client)
            raise
        except (OSError, smtplib.SMTPException) as error:
            _close(client)
            raise DeliveryError(f"SMTP server {where} did not accept the message: {_describe(error, endpoint)}") from None
        _quit(client)  # the message is accepted; a failing QUIT does not undo that
        if refused:
            raise DeliveryError(f"SMTP server {where} refused recipients {sorted(refused)}")
        return Delivery("smtp", str(message["Message-ID"]), where, encrypted)

    def _write_outbox(self, message: EmailMessage) -> Delivery:
        outbox = Path(self.outbox_dir)
        message_id = str(message["Message-ID"])
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", message_id.strip("<>").split("@")[0])[:80]
        target = outbox / f"{stamp}-{slug}.eml"
        try:
            outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp's mode 0600 stays with the message: it holds a customer's address and usage.
            with tempfile.NamedTemporaryFile("wb", dir=outbox, suffix=".tmp", delete=False) as handle:
                handle.write(message.as_bytes())
            os.replace(handle.name, target)  # readers never see a half-written message
        except OSError as error:
            raise DeliveryError(f"cannot write to the outbox {outbox}: {error.strerror or error}") from None
        return Delivery("outbox", message_id, str(target))


def _domain_of(address: str) -> str:
    _, email = parseaddr(address)
    return email.rpartition("@")[2] or "localhost"


def _describe(error: BaseException, endpoint: SmtpEndpoint) -> str:
    """An error text for logs and last_error: the SMTP reply or OS reason, never a credential."""
    if isinstance(error, smtplib.SMTPResponseException):
        reply = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else str(error.smtp_error)
        text = f"{error.smtp_code} {reply}"
    elif isinstance(error, smtplib.SMTPRecipientsRefused):
        text = "recipients refused: " + "; ".join(
            f"{code} {reply.decode('utf-8', 'replace') if isinstance(reply, bytes) else reply}"
            for code, reply in error.recipients.values()
        )
    elif isinstance(error, OSError) and error.strerror:
        text = f"{type(error).__name__}: {error.strerror}"
    else:
        text = f"{type(error).__name__}: {error}"
    if endpoint.password:
        text = text.replace(endpoint.password, "***")
    return text


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        _close(client)


def _close(client: smtplib.SMTP) -> None:
    try:
        client.close()
    except OSError:
        pass
