"""Telling a parent about a new payment link, by email through SMTP (off unless configured)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

import structlog

from basketball_api.settings import Settings

log = structlog.get_logger("basketball_api.notify")


def send_new_link(settings: Settings, *, to: str, order_id: int, product: str, url: str) -> bool:
    """Email the new link; returns False (and logs why) when email is off or fails."""
    if not settings.smtp_host:
        return False
    message = EmailMessage()
    message["From"] = settings.smtp_sender
    message["To"] = to
    message["Subject"] = f"Your payment link for {product} (order {order_id})"
    message.set_content(
        f"Hello,\n\nThe earlier payment link for {product} expired. "
        f"Here is a new one:\n\n{url}\n\nThank you!\n"
    )
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
