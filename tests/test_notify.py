"""Emailing a parent the new payment link, against a local SMTP sink (aiosmtpd)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr
from structlog.testing import capture_logs
from tests.stack import running_stack
from tests.standard_catalogue import migrate_with_catalogue

from basketball_api.notify import send_new_link
from basketball_api.settings import Settings

USER, PASSWORD = "club", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sink:
    """Collects every message it is given; ``reject`` answers DATA with a permanent failure."""

    port: int = 0
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    reject: bool = False

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.reject:
            return "554 5.7.1 message refused"
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def authenticate(
        self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        if ok:
            self.logins.append(USER)
        return AuthResult(success=ok)


@pytest.fixture
def sink() -> Iterator[Sink]:
    handler = Sink(port=free_port())
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=handler.port,
        authenticator=handler.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def settings(**extra: Any) -> Settings:
    return Settings(smtp_sender="payments@club.example", **extra)


def send(config: Settings, url: str = "http://pay.example/c/cs_test_1") -> bool:
    return send_new_link(
        config, to="parent@example.org", order_id=42, product="Utah Invitational", url=url
    )


def test_the_parent_gets_the_new_link(sink: Sink) -> None:
    assert send(settings(smtp_host="127.0.0.1", smtp_port=sink.port)) is True

    [message] = sink.messages
    assert message["To"] == "parent@example.org"
    assert message["From"] == "payments@club.example"
    assert message["Subject"] == "Your payment link for Utah Invitational (order 42)"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "http://pay.example/c/cs_test_1" in body.decode()
    assert sink.envelopes == [("payments@club.example", ["parent@example.org"])]


def test_credentials_are_used_when_configured(sink: Sink) -> None:
    config = settings(
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_username=USER,
        smtp_password=SecretStr(PASSWORD),
    )
    assert send(config) is True
    assert sink.logins == [USER]
    assert len(sink.messages) == 1


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[tuple[Sink, Path]]:
    """A sink that requires STARTTLS, with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Sink(port=free_port())
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=handler.port,
        tls_context=context,
        require_starttls=True,
    )
    controller.start()
    try:
        yield handler, cert
    finally:
        controller.stop()


def test_starttls_checks_the_servers_certificate(
    tls_sink: tuple[Sink, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, cert = tls_sink
    config = settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_starttls=True)
    with capture_logs() as logs:
        assert send(config) is False  # a certificate nobody vouches for
    assert [e["error"] for e in logs] == ["SSLCertVerificationError"]
    assert sink.messages == []

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now it is trusted
    assert send(config) is True
    assert len(sink.messages) == 1


def test_no_email_without_smtp_host(sink: Sink) -> None:
    assert send(settings()) is False
    assert sink.messages == []


def test_a_refusing_or_absent_server_is_reported_not_raised(sink: Sink) -> None:
    sink.reject = True
    with capture_logs() as logs:
        assert send(settings(smtp_host="127.0.0.1", smtp_port=sink.port)) is False
        assert send(settings(smtp_host="127.0.0.1", smtp_port=free_port())) is False
    failures = [e for e in logs if e["event"] == "link_email_failed"]
    assert [e["log_level"] for e in failures] == ["warning", "warning"]
    assert [e["error"] for e in failures] == ["SMTPDataError", "ConnectionRefusedError"]
    assert all("parent@" not in str(e) for e in logs)


# -- through the reissue endpoints --------------------------------------------------------


def test_reissue_emails_the_new_link_only_when_asked(sink: Sink, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'notify.db'}"
    migrate_with_catalogue(url)
    with running_stack(url, smtp_host="127.0.0.1", smtp_port=sink.port) as stack:
        quiet, loud = (stack.order("jersey", parent_email=f"p{i}@example.org") for i in (1, 2))
        for o in (quiet, loud):
            stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])

        assert stack.api.post(f"/admin/orders/{quiet['id']}/reissue").json()["emailed"] is False
        assert sink.messages == []

        out = stack.api.post(f"/admin/orders/{loud['id']}/reissue?email=true").json()
        assert out["emailed"] is True
        [message] = sink.messages
        assert message["To"] == "p2@example.org"
        assert f"(order {loud['id']})" in message["Subject"]
        body = message.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert out["pay_url"] in body.decode()  # the pay link, never Stripe's URL
        assert out["order"]["checkout_url"] not in body.decode()

        again = stack.api.post(f"/admin/orders/{loud['id']}/reissue?email=true").json()
        assert again["created"] is False  # no new link, so no second email
        assert again["emailed"] is False
        assert len(sink.messages) == 1


def test_a_failing_mail_server_does_not_fail_the_reissue(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'notify.db'}"
    migrate_with_catalogue(url)
    with running_stack(url, smtp_host="127.0.0.1", smtp_port=free_port()) as stack:
        order = stack.order("monthly")
        stack.sdk.v1.checkout.sessions.expire(order["checkout_session_id"])
        r = stack.api.post(f"/admin/orders/{order['id']}/reissue?email=true")
        assert r.status_code == 200
        assert r.json()["created"] is True
        assert r.json()["emailed"] is False
        fresh = r.json()["order"]["checkout_session_id"]
        assert stack.sandbox.sessions()[fresh]["status"] == "open"
