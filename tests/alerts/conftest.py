"""Real SMTP servers for the alert tests (aiosmtpd on loopback), started and stopped by each test."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_USER = "alerts"
SMTP_PASSWORD = "s3cret-Pa55word"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    encrypted: bool
    authenticated_as: str | None


@dataclass
class RecordingHandler:
    """Accepts every message (or answers `refuse_with` to DATA) and keeps what it received."""

    refuse_with: str | None = None
    received: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd hook
        if self.refuse_with:
            return self.refuse_with
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), message, session.ssl is not None, login)
        )
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    controller: Controller
    handler: RecordingHandler
    port: int
    ca_file: str | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        credentials = f"{user}:{password}@" if user else ""
        return f"smtp://{credentials}127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        return self.handler.received


def _check_password(server, session, envelope, mechanism, auth_data) -> AuthResult:  # noqa: ANN001
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def _start(handler: RecordingHandler, **smtp_parameters: object) -> Iterator[SmtpServer]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_parameters)
    controller.start()
    try:
        yield SmtpServer(controller, handler, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server (no TLS, no AUTH) that accepts everything."""
    yield from _start(RecordingHandler())


@pytest.fixture
def refusing_smtp_server() -> Iterator[SmtpServer]:
    """A server that answers every DATA with a permanent 550 error."""
    yield from _start(RecordingHandler(refuse_with="550 5.7.1 Delivery not authorized, message refused"))


@pytest.fixture
def closed_smtp_port() -> int:
    """A loopback port where nothing listens (connection refused)."""
    return free_port()


@pytest.fixture(scope="session")
def smtp_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command line tool)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def starttls_smtp_server(smtp_certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """A server that offers STARTTLS and requires AUTH (only after TLS) with SMTP_USER/SMTP_PASSWORD."""
    cert, key = smtp_certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    for server in _start(
        RecordingHandler(), tls_context=context, require_starttls=True, authenticator=_check_password,
        auth_require_tls=True, auth_required=True,
    ):
        server.ca_file = str(cert)
        yield server
