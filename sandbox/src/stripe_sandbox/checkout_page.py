"""The hosted checkout page at ``session.url`` and the recovery page at
``after_expiration.recovery.url``: plain HTML forms that a person (or a
headless browser) clicks through, no JavaScript."""

from __future__ import annotations

import datetime
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .currencies import THREE_DECIMAL, ZERO_DECIMAL
from .errors import StripeError
from .forms import get_str, parse_form
from .sessions import SessionRecord
from .state import Sandbox

SYMBOLS = {"eur": "€", "usd": "$", "gbp": "£", "jpy": "¥"}


def format_amount(amount: int, currency: str) -> str:
    """``2500, "eur"`` → ``€25.00``; ``1200, "chf"`` → ``12.00 CHF``."""
    if currency in ZERO_DECIMAL:
        value = f"{amount:,}"
    elif currency in THREE_DECIMAL:
        value = f"{amount // 1000:,}.{amount % 1000:03d}"
    else:
        value = f"{amount // 100:,}.{amount % 100:02d}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


def success_redirect(record: SessionRecord) -> str | None:
    """``success_url`` with ``{CHECKOUT_SESSION_ID}`` replaced, as Stripe does."""
    if record.success_url is None:
        return None
    return record.success_url.replace("{CHECKOUT_SESSION_ID}", record.id)


_STYLE = """
body { font-family: system-ui, sans-serif; background: #f6f9fc; color: #1a1f36; }
main { max-width: 34rem; margin: 3rem auto; background: #fff; padding: 2rem;
       border-radius: 8px; box-shadow: 0 2px 8px rgba(0,0,0,.08); }
table { width: 100%; border-collapse: collapse; margin: 1rem 0; }
td { padding: .4rem 0; border-bottom: 1px solid #e3e8ee; }
td.amount { text-align: right; }
.total td { font-weight: bold; border-bottom: none; }
button { font-size: 1rem; padding: .6rem 1.2rem; margin: .3rem .3rem 0 0; cursor: pointer; }
#pay { background: #635bff; color: #fff; border: none; border-radius: 4px; }
.note { color: #697386; font-size: .9rem; }
.banner { background: #fff8e1; padding: .3rem .6rem; font-size: .8rem; }
"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        "<body><main><p class='banner'>Stripe sandbox: test mode, no real payment.</p>"
        f"{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status_code)


def _when(ts: int) -> str:
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _items_table(record: SessionRecord) -> str:
    rows = "".join(
        f"<tr><td class='item'>{escape(item.name)}</td><td>&times; {item.quantity}</td>"
        f"<td class='amount'>{format_amount(item.amount, item.currency)}</td></tr>"
        for item in record.line_items
    )
    total = format_amount(record.amount_total, record.currency)
    return (
        f"<table>{rows}<tr class='total'><td>Total</td><td></td>"
        f"<td class='amount' id='total'>{total}</td></tr></table>"
    )


def _open_page(record: SessionRecord) -> HTMLResponse:
    total = format_amount(record.amount_total, record.currency)
    email = escape(record.customer_email or "", quote=True)
    cancel = (
        f"<form method='post' action='/checkout/{record.id}/cancel'>"
        "<button type='submit' id='cancel'>Cancel</button></form>"
        if record.cancel_url
        else ""
    )
    body = (
        "<h1>Checkout</h1>"
        f"<p id='status' data-status='open'>Pay {total}</p>"
        f"{_items_table(record)}"
        f"<form method='post' action='/checkout/{record.id}/pay'>"
        f"<label>Email <input type='email' name='email' value='{email}' required></label>"
        f"<p><button type='submit' id='pay'>Pay {total}</button>"
        "<button type='submit' id='pay-later' name='delayed' value='true'>"
        "Pay by bank debit (settles later)</button></p></form>"
        f"{cancel}"
        f"<p class='note'>This page expires at {_when(record.expires_at)}.</p>"
    )
    return _page(f"Pay {total}", body)


def _closed_page(record: SessionRecord) -> HTMLResponse:
    if record.status == "complete":
        paid = record.payment_status == "paid"
        text = "This payment is complete." if paid else "Payment received; it is still settling."
        link = success_redirect(record)
        back = f"<p><a href='{escape(link, quote=True)}'>Return to the site</a></p>" if link else ""
        body = (
            "<h1>Checkout complete</h1>"
            f"<p id='status' data-status='complete'>{text}</p>{_items_table(record)}{back}"
        )
        return _page("Checkout complete", body)
    recovery = ""
    if record.recovery_url:
        url = escape(record.recovery_url, quote=True)
        recovery = f"<p><a id='recover' href='{url}'>Start a new checkout</a></p>"
    body = (
        "<h1>Checkout expired</h1>"
        "<p id='status' data-status='expired'>This checkout session has expired; "
        f"it can no longer be paid.</p>{recovery}"
    )
    return _page("Checkout expired", body, status_code=410)


def _missing_page() -> HTMLResponse:
    body = "<h1>Not found</h1><p id='status' data-status='missing'>No such checkout session.</p>"
    return _page("Not found", body, status_code=404)


async def show(request: Request) -> Response:
    """``GET /checkout/{id}``."""
    sandbox: Sandbox = request.app.state.sandbox
    sandbox.sweep()
    record = sandbox.sessions.get(request.path_params["id"])
    if record is None:
        return _missing_page()
    return _open_page(record) if record.status == "open" else _closed_page(record)


async def pay(request: Request) -> Response:
    """``POST /checkout/{id}/pay``: complete the session, go to ``success_url``."""
    sandbox: Sandbox = request.app.state.sandbox
    sandbox.sweep()
    session_id = request.path_params["id"]
    record = sandbox.sessions.get(session_id)
    if record is None:
        return _missing_page()
    if record.status != "open":
        return RedirectResponse(f"/checkout/{session_id}", status_code=303)
    form = parse_form(await request.body())
    delayed = get_str(form, "delayed") == "true"
    sandbox.complete_session(session_id, delayed=delayed, email=get_str(form, "email") or None)
    target = success_redirect(record) or f"/checkout/{session_id}"
    return RedirectResponse(target, status_code=303)


async def cancel(request: Request) -> Response:
    """``POST /checkout/{id}/cancel``: back to ``cancel_url``; the session stays open."""
    sandbox: Sandbox = request.app.state.sandbox
    record = sandbox.sessions.get(request.path_params["id"])
    if record is None:
        return _missing_page()
    return RedirectResponse(record.cancel_url or f"/checkout/{record.id}", status_code=303)


async def show_recovery(request: Request) -> Response:
    """``GET /recover/{id}``: offer a new checkout for an expired session."""
    sandbox: Sandbox = request.app.state.sandbox
    sandbox.sweep()
    record = sandbox.sessions.get(request.path_params["id"])
    if record is None:
        return _missing_page()
    if record.status != "expired" or not record.recovery_enabled:
        return _page(
            "Nothing to recover", "<p id='status'>This checkout cannot be recovered.</p>", 409
        )
    body = (
        "<h1>Your checkout expired</h1>"
        f"<p id='status' data-status='recoverable'>You can start again with the same items.</p>"
        f"{_items_table(record)}"
        f"<form method='post' action='/recover/{record.id}'>"
        "<button type='submit' id='restart'>Start a new checkout</button></form>"
    )
    return _page("Start a new checkout", body)


async def recover(request: Request) -> Response:
    """``POST /recover/{id}``: create the new session and go to its page."""
    sandbox: Sandbox = request.app.state.sandbox
    sandbox.sweep()
    try:
        record = sandbox.recover(request.path_params["id"])
    except StripeError as exc:
        message = escape(str(exc.error.get("message", "")))
        return _page("Cannot recover", f"<p id='status'>{message}</p>", exc.status)
    return RedirectResponse(record.hosted_url, status_code=303)


def routes() -> list[Route]:
    """The HTML routes (not counted as API calls)."""
    return [
        Route("/checkout/{id}", show, methods=["GET"]),
        Route("/checkout/{id}/pay", pay, methods=["POST"]),
        Route("/checkout/{id}/cancel", cancel, methods=["POST"]),
        Route("/recover/{id}", show_recovery, methods=["GET"]),
        Route("/recover/{id}", recover, methods=["POST"]),
    ]
