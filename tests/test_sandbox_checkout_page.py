"""The sandbox's hosted checkout page: plain HTTP checks, and a click-through in
Debian's chromium driven by selenium."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from stripe_sandbox.checkout_page import format_amount
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer


async def _landing(request: Request) -> HTMLResponse:
    session_id = request.query_params.get("session_id", "")
    return HTMLResponse(
        f"<html><body><h1 id='landing'>{request.url.path}</h1>"
        f"<p id='session'>{session_id}</p></body></html>"
    )


@pytest.fixture(scope="module")
def shop() -> Iterator[BackgroundServer]:
    """Stands for the club's site: the success and cancel pages."""
    app = Starlette(routes=[Route("/{page}", _landing, methods=["GET"])])
    with BackgroundServer(app) as srv:
        yield srv


def create(client: stripe.StripeClient, shop: BackgroundServer, **extra: Any) -> Any:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 12550,
                    "product_data": {"name": "Season membership U14"},
                },
                "quantity": 1,
            },
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 2000,
                    "product_data": {"name": "Training shorts"},
                },
                "quantity": 2,
            },
        ],
        "success_url": f"{shop.url}/thanks?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{shop.url}/cart",
        "customer_email": "family@example.com",
    }
    params.update(extra)
    return client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (16550, "eur", "€165.50"),
        (5, "usd", "$0.05"),
        (123456, "gbp", "£1,234.56"),
        (1200, "chf", "12.00 CHF"),
        (500, "jpy", "¥500"),
        (1500, "kwd", "1.500 KWD"),
    ],
)
def test_amounts_are_formatted_with_their_currency(amount: int, currency: str, shown: str) -> None:
    assert format_amount(amount, currency) == shown


def test_page_shows_items_total_and_buttons(
    client: stripe.StripeClient, shop: BackgroundServer
) -> None:
    session = create(client, shop)
    with httpx.Client() as browser:
        page = browser.get(session.url)
    assert page.status_code == 200
    assert "Season membership U14" in page.text
    assert "Training shorts" in page.text
    assert "€165.50" in page.text
    assert "id='pay'" in page.text
    assert "id='cancel'" in page.text
    assert "<script" not in page.text


def test_pay_redirects_to_success_url_with_the_session_id(
    client: stripe.StripeClient, control: SandboxControl, shop: BackgroundServer
) -> None:
    session = create(client, shop)
    with httpx.Client() as browser:
        paid = browser.post(f"{session.url}/pay", data={"email": "family@example.com"})
        assert paid.status_code == 303
        assert paid.headers["location"] == f"{shop.url}/thanks?session_id={session.id}"
        again = browser.get(session.url)
    assert "This payment is complete." in again.text
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status) == ("complete", "paid")
    assert done.customer_details is not None
    assert done.customer_details.email == "family@example.com"
    assert done.payment_intent is not None
    assert (client.v1.events.list().data[0].type) == "checkout.session.completed"


def test_cancel_returns_to_cancel_url_and_leaves_the_session_open(
    client: stripe.StripeClient, shop: BackgroundServer
) -> None:
    session = create(client, shop)
    with httpx.Client() as browser:
        cancelled = browser.post(f"{session.url}/cancel")
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == f"{shop.url}/cart"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_delayed_payment_button(client: stripe.StripeClient, shop: BackgroundServer) -> None:
    session = create(client, shop)
    with httpx.Client() as browser:
        browser.post(f"{session.url}/pay", data={"email": "a@example.com", "delayed": "true"})
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status) == ("complete", "unpaid")


def test_expired_and_unknown_sessions_say_so(
    client: stripe.StripeClient, control: SandboxControl, shop: BackgroundServer
) -> None:
    session = create(client, shop, after_expiration={"recovery": {"enabled": True}})
    control.advance_clock(24 * 3600)
    with httpx.Client() as browser:
        expired = browser.get(session.url)
        assert expired.status_code == 410
        assert "This checkout session has expired" in expired.text
        assert f"/recover/{session.id}" in expired.text
        late_pay = browser.post(f"{session.url}/pay")
        assert late_pay.status_code == 303
        assert late_pay.headers["location"] == f"/checkout/{session.id}"
        missing = browser.get(session.url.replace(session.id, "cs_test_nope"))
        assert missing.status_code == 404
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"


@pytest.mark.browser
def test_a_person_pays_in_chromium(
    client: stripe.StripeClient, control: SandboxControl, shop: BackgroundServer, chromium: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    session = create(client, shop)
    chromium.get(session.url)
    assert "€165.50" in chromium.find_element(By.ID, "total").text
    items = [e.text for e in chromium.find_elements(By.CSS_SELECTOR, "td.item")]
    assert items == ["Season membership U14", "Training shorts"]
    chromium.find_element(By.ID, "pay").click()
    WebDriverWait(chromium, 10).until(
        expected_conditions.presence_of_element_located((By.ID, "landing"))
    )
    assert chromium.current_url == f"{shop.url}/thanks?session_id={session.id}"
    assert chromium.find_element(By.ID, "session").text == session.id

    chromium.get(session.url)  # coming back shows it is done
    status = chromium.find_element(By.ID, "status")
    assert status.get_attribute("data-status") == "complete"
    assert control.sessions()[session.id] == {"status": "complete", "payment_status": "paid"}
