"""A parent in a real browser holds a dead link: the pay URL opens a fresh, live Checkout page
of the sandbox, they pay, the return page says so, and the stranded gauge falls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.stack import running_stack
from tests.standard_catalogue import migrate_with_catalogue

pytestmark = pytest.mark.browser


def test_a_parent_pays_through_a_dead_links_pay_url(chromium: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    driver = chromium
    wait = WebDriverWait(driver, 10)
    database_url = f"sqlite:///{tmp_path / 'parent.db'}"
    migrate_with_catalogue(database_url)
    with running_stack(database_url) as stack:
        stack.sandbox.configure(public_url=stack.sandbox_url)
        order = stack.order("tournament")
        dead = order["checkout_session_id"]
        stack.sdk.v1.checkout.sessions.expire(dead)
        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.refresh()["tournament"] == 1  # stranded behind a dead link

        driver.get(order["pay_url"])  # the link the parent was given, days ago
        wait.until(ec.url_contains(f"{stack.sandbox_url}/checkout/"))
        assert dead not in driver.current_url  # a fresh session, not the dead one
        pay = wait.until(ec.element_to_be_clickable((By.ID, "pay")))  # a live Checkout page
        pay.click()
        wait.until(ec.url_contains("/checkout/return"))
        assert driver.current_url.startswith(f"{stack.api_url}/checkout/return?session_id=cs_")
        assert driver.find_element(By.ID, "title").text == f"Order {order['id']}"
        assert "Paid" in driver.find_element(By.ID, "message").text
        assert driver.find_element(By.ID, "state").text.lower() == "paid"

        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.api.get(f"/orders/{order['id']}").json()["status"] == "paid"
        assert stack.refresh()["tournament"] == 0  # the gauge fell

        driver.get(order["order_url"])  # the order page, later: its state, no pay button
        assert driver.find_element(By.ID, "state").text.lower() == "paid"
        assert not driver.find_elements(By.ID, "pay")
