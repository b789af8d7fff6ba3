"""An operator in a real browser: log in to /admin, reissue a dead link, the parent pays it at
the sandbox's checkout page and lands back on the API, and the stranded totals drop by one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.stack import ADMIN_TOKEN, running_stack
from tests.standard_catalogue import migrate_with_catalogue

pytestmark = pytest.mark.browser


def totals(driver: Any) -> dict[str, int]:
    from selenium.webdriver.common.by import By

    spans = driver.find_elements(By.CSS_SELECTOR, "#totals span[data-category]")
    return {
        s.get_attribute("data-category"): int(s.find_element(By.TAG_NAME, "b").text) for s in spans
    }


def test_an_operator_reissues_a_link_and_the_parent_pays_it(chromium: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    driver = chromium
    wait = WebDriverWait(driver, 10)
    database_url = f"sqlite:///{tmp_path / 'operator.db'}"
    migrate_with_catalogue(database_url)
    with running_stack(database_url) as stack:
        stack.sandbox.configure(public_url=stack.sandbox_url)
        stranded = [stack.order("tournament") for _ in range(3)] + [stack.order("monthly")]
        for o in stranded:
            stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        gauge = stack.refresh()
        assert gauge == {"tournament": 3, "monthly": 1, "jersey": 0}

        driver.get(f"{stack.api_url}/admin")
        driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        driver.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "totals")))
        assert totals(driver) == gauge

        target = stranded[0]
        row = driver.find_element(By.CSS_SELECTOR, f"tr[data-order='{target['id']}']")
        row.find_element(By.CSS_SELECTOR, "button.reissue").click()
        link = wait.until(ec.presence_of_element_located((By.ID, "new-link")))
        new_url = link.get_attribute("href")
        assert new_url is not None
        assert new_url.startswith(f"{stack.api_url}/pay/")  # the order's pay link
        assert "New link issued" in driver.find_element(By.ID, "notice").text

        link.click()  # the parent opens the link: the pay link sends them to Checkout...
        wait.until(ec.url_contains(f"{stack.sandbox_url}/checkout/"))
        wait.until(ec.element_to_be_clickable((By.ID, "pay"))).click()  # ...and they pay
        wait.until(ec.url_contains("/checkout/return"))
        assert driver.current_url.startswith(f"{stack.api_url}/checkout/return?session_id=")
        assert driver.find_element(By.ID, "title").text == f"Order {target['id']}"
        assert "Paid" in driver.find_element(By.ID, "message").text

        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.api.get(f"/orders/{target['id']}").json()["status"] == "paid"
        assert stack.refresh() == {"tournament": 2, "monthly": 1, "jersey": 0}
        driver.get(f"{stack.api_url}/admin")
        assert totals(driver) == {"tournament": 2, "monthly": 1, "jersey": 0}
        shown = [
            int(r.get_attribute("data-order"))
            for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-order]")
        ]
        assert target["id"] not in shown
        assert sorted(shown) == sorted(o["id"] for o in stranded[1:])
