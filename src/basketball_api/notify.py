"""Telling a parent about a new payment link, by email through SMTP (off unless configured)."""

from __future__ import annotations

import enum
import smtplib
import ssl
from email.message import EmailMessage

import structlog

from basketball_api.settings import Settings

log = structlog.get_logger("basketball_api.notify")

NOT_CONFIGURED = "no email was sent: email is not configured (set SMTP_HOST)"


class Email(enum.StrEnum):
    """What became of an email an action would send; every caller says it out loud."""

    not_requested = "not_requested"
    sent = "sent"
    not_configured = "not_configured"  # SMTP_HOST unset: nothing was sent
    failed = "failed"  # the SMTP server refused or could not be reached


def configured(settings: Settings) -> bool:
    return bool(settings.smtp_host)


def send_link(
    settings: Settings, *, to: str, order_id: int, product: str, url: str, renewed: bool = True
) -> Email:
    """:func:`send_new_link`, telling apart "email is off" from "the email failed"."""
    if not configured(settings):
        return Email.not_configured
    sent = send_new_link(
        settings, to=to, order_id=order_id, product=product, url=url, renewed=renewed
    )
    return Email.sent if sent else Email.failed


def send_new_link(
    settings: Settings, *, to: str, order_id: int, product: str, url: str, renewed: bool = True
) -> bool:
    """Email the link; returns False (and logs why) when email is off or fails.

    ``renewed``: the earlier link expired and this is a new one; otherwise a reminder of the
    link the parent already has."""
    if not settings.smtp_host:
        log.warning("link_email_not_configured", order_id=order_id)
        return False
    message = EmailMessage()
    message["From"] = settings.smtp_sender
    message["To"] = to
    message["Subject"] = f"Your payment link for {product} (order {order_id})"
    opening = (
        f"The earlier payment link for {product} expired. This one opens a fresh payment page"
        " and keeps working until the order is paid:"
        if renewed
        else f"Here is the payment link for {product}; it keeps working until the order is paid:"
    )
    message.set_content(f"Hello,\n\n{opening}\n\n{url}\n\nThank you!\n")
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
            if settings.smtp_starttls:
                # smtplib's default context checks no certificate; the standard one does.
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as e:
        log.warning("link_email_failed", order_id=order_id, error=type(e).__name__)
        return False
    log.info("link_emailed", order_id=order_id)
    return True
