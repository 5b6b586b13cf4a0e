"""The notifier against real SMTP servers (aiosmtpd) and in outbox mode."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from .conftest import SMTP_PASSWORD, SMTP_USER, SmtpServer

from resources.notifier import DeliveryError, NotifierResource, SmtpEndpoint

SENDER = "Aisyst Billing <billing@aisyst.example>"


def notifier(tmp_path: Path, smtp_url: str | None = None, ca_file: str | None = None) -> NotifierResource:
    return NotifierResource(
        smtp_url=smtp_url, outbox_dir=str(tmp_path / "outbox"), sender=SENDER,
        ops_recipients=["ops@aisyst.example"], smtp_ca_file=ca_file, timeout_seconds=10,
    )


def a_message(to: str = "ana@example.com") -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "You have used 80 % of your minutes"
    message["To"] = to
    message.set_content("400 of 500 minutes used.")
    message.add_alternative("<p>400 of 500 minutes used.</p>", subtype="html")
    return message


def test_smtp_delivery(tmp_path: Path, smtp_server: SmtpServer) -> None:
    delivery = notifier(tmp_path, smtp_server.url()).send(a_message())
    assert delivery.channel == "smtp" and delivery.destination == f"127.0.0.1:{smtp_server.port}"
    assert not delivery.encrypted
    [received] = smtp_server.received
    assert received.rcpt_tos == ["ana@example.com"]
    assert received.mail_from == "billing@aisyst.example"
    assert received.message["Message-ID"] == delivery.message_id
    assert received.message["Subject"] == "You have used 80 % of your minutes"
    assert received.message.get_body(("html",)).get_content().strip() == "<p>400 of 500 minutes used.</p>"
    assert not (tmp_path / "outbox").exists()


def test_starttls_and_login_when_the_server_offers_it(tmp_path: Path, starttls_smtp_server: SmtpServer) -> None:
    url = starttls_smtp_server.url(SMTP_USER, SMTP_PASSWORD)
    delivery = notifier(tmp_path, url, starttls_smtp_server.ca_file).send(a_message())
    assert delivery.encrypted
    [received] = starttls_smtp_server.received
    assert received.encrypted and received.authenticated_as == SMTP_USER


def test_wrong_password_is_reported_without_the_password(tmp_path: Path, starttls_smtp_server: SmtpServer) -> None:
    url = starttls_smtp_server.url(SMTP_USER, "wrong-" + SMTP_PASSWORD)
    with pytest.raises(DeliveryError) as raised:
        notifier(tmp_path, url, starttls_smtp_server.ca_file).send(a_message())
    assert "535" in str(raised.value)
    assert SMTP_PASSWORD not in str(raised.value) and "wrong-" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert starttls_smtp_server.received == []


def test_untrusted_certificate_is_refused(tmp_path: Path, starttls_smtp_server: SmtpServer) -> None:
    url = starttls_smtp_server.url(SMTP_USER, SMTP_PASSWORD)
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        notifier(tmp_path, url).send(a_message())  # no CA file: the self-signed certificate is not trusted
    assert starttls_smtp_server.received == []


def test_password_is_not_sent_in_clear_text_to_a_remote_host(tmp_path: Path) -> None:
    endpoint = SmtpEndpoint.parse("smtp://u:p@smtp.example.com:2525")
    assert not endpoint.is_loopback and endpoint.port == 2525
    assert SmtpEndpoint.parse("smtp://u:p@127.0.0.1:25").is_loopback
    assert SmtpEndpoint.parse("smtp://localhost").port == 587
    assert SmtpEndpoint.parse("smtps://a%40b:p%2Fw@mail.example.com").username == "a@b"
    assert SmtpEndpoint.parse("smtps://a%40b:p%2Fw@mail.example.com").password == "p/w"
    assert "p%2Fw" not in repr(SmtpEndpoint.parse("smtps://a%40b:p%2Fw@mail.example.com"))
    assert "p/w" not in repr(SmtpEndpoint.parse("smtps://a%40b:p%2Fw@mail.example.com"))


@pytest.mark.parametrize("url", ["http://u:secretpw@host", "smtp://u:secretpw@host:notaport", "smtp:///nohost"])
def test_bad_smtp_url_fails_without_echoing_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(DeliveryError) as raised:
        notifier(tmp_path, url).send(a_message())
    assert "secretpw" not in str(raised.value) and "AISYST_SMTP_URL" in str(raised.value)


def test_refusing_server_raises(tmp_path: Path, refusing_smtp_server: SmtpServer) -> None:
    with pytest.raises(DeliveryError, match="550 5.7.1 Delivery not authorized"):
        notifier(tmp_path, refusing_smtp_server.url()).send(a_message())
    assert refusing_smtp_server.received == []


def test_closed_port_raises(tmp_path: Path, closed_smtp_port: int) -> None:
    with pytest.raises(DeliveryError, match=f"cannot connect to SMTP server 127.0.0.1:{closed_smtp_port}"):
        notifier(tmp_path, f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{closed_smtp_port}").send(a_message())


def test_outbox_mode_writes_eml_files(tmp_path: Path) -> None:
    sender = notifier(tmp_path)
    first = sender.send(a_message())
    second = sender.send_ops_alert("Payment failed: in_123", "Invoice in_123 payment failed.", "<b>in_123</b>")
    assert first.channel == second.channel == "outbox"
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert [str(f) for f in files] == sorted([first.destination, second.destination])
    assert not list((tmp_path / "outbox").glob("*.tmp"))
    parsed = message_from_bytes(Path(second.destination).read_bytes(), policy=policy.default)
    assert parsed["To"] == "ops@aisyst.example" and parsed["From"] == SENDER
    assert parsed["Subject"] == "Payment failed: in_123"
    assert parsed["Message-ID"] == second.message_id and parsed["Date"]
    assert parsed.get_body(("plain",)).get_content().strip() == "Invoice in_123 payment failed."


def test_outbox_that_cannot_be_written_raises(tmp_path: Path) -> None:
    (tmp_path / "outbox").write_text("a file where the folder should be")
    with pytest.raises(DeliveryError, match="cannot write to the outbox"):
        notifier(tmp_path).send(a_message())


def test_message_without_recipient_is_refused(tmp_path: Path) -> None:
    message = a_message()
    del message["To"]
    with pytest.raises(DeliveryError, match="no recipient"):
        notifier(tmp_path).send(message)


def test_resource_repr_hides_the_smtp_url(tmp_path: Path) -> None:
    resource = notifier(tmp_path, "smtp://alerts:hunter2-secret@mail.example.com:587")
    assert "hunter2-secret" not in repr(resource) and "hunter2-secret" not in str(resource)
    assert "<secret>" in repr(resource)


def test_from_settings_binds_the_smtp_url_as_an_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from aisyst_pipelines.settings import Settings

    monkeypatch.setenv("AISYST_HOME", str(tmp_path))
    monkeypatch.setenv("AISYST_OPS_EMAIL", "ops1@aisyst.example, ops2@aisyst.example")
    monkeypatch.delenv("AISYST_SMTP_URL", raising=False)
    outbox = NotifierResource.from_settings(Settings.from_env())
    assert outbox.smtp_url is None and outbox.channel == "outbox"
    assert outbox.ops_recipients == ["ops1@aisyst.example", "ops2@aisyst.example"]
    assert outbox.outbox_dir == str(tmp_path / "outbox") and outbox.sender == "Aisyst Billing <billing@aisyst.example>"
    monkeypatch.setenv("AISYST_SMTP_URL", "smtp://alerts:hunter2-secret@mail.example.com:587")
    smtp = NotifierResource.from_settings(Settings.from_env())
    assert isinstance(smtp.smtp_url, dg.EnvVar) and smtp.smtp_url.env_var_name == "AISYST_SMTP_URL"
    assert "hunter2-secret" not in repr(smtp)
