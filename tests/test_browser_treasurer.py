"""The treasurer on a 390 px phone, in a real Chromium: the operator pages fit the screen (no
sideways scrolling, every button on screen), the search narrows the list, and a cancel button
cancels the order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.stack import ADMIN_TOKEN, Stack, running_stack
from tests.standard_catalogue import migrate_with_catalogue

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}


def as_phone(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)


def overflow(driver: Any) -> dict[str, Any]:
    """How far the page and its buttons reach beyond the viewport's width."""
    result: dict[str, Any] = driver.execute_script(
        """
        const width = window.innerWidth;
        const outside = [...document.querySelectorAll('button, input, select, a')]
          .filter(e => e.offsetParent !== null)
          .map(e => e.getBoundingClientRect())
          .filter(r => r.right > width + 0.5 || r.left < -0.5).length;
        return {width, scroll: document.documentElement.scrollWidth, outside};
        """
    )
    return result


def seed(stack: Stack) -> dict[str, dict[str, Any]]:
    families = {
        "riley": stack.order(
            "tournament", player_name="Riley Chen", parent_email="chen@example.org"
        ),
        "casey": stack.order(
            "tournament", player_name="Casey Chen", parent_email="chen@example.org"
        ),
        "long": stack.order(
            "monthly",
            player_name="Maximilian Alexander Montgomery-Fitzgerald",
            parent_email="a.very.long.address.for.a.parent@subdomain.example-club.org",
        ),
    }
    stack.sdk.v1.checkout.sessions.expire(families["casey"]["checkout_session_id"])
    stack.sandbox.wait_for_webhooks(timeout=10)
    stack.refresh()
    return families


def test_the_treasurer_works_on_a_390px_phone(chromium: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    driver = chromium
    wait = WebDriverWait(driver, 10)
    database_url = f"sqlite:///{tmp_path / 'phone.db'}"
    migrate_with_catalogue(database_url)
    with running_stack(database_url) as stack:
        families = seed(stack)
        as_phone(driver)
        driver.get(f"{stack.api_url}/admin")
        driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        driver.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "stranded")))
        for path in ("/admin", "/admin/page/orders", "/admin/catalogue"):
            driver.get(f"{stack.api_url}{path}")
            measured = overflow(driver)
            assert measured["width"] == 390, measured
            assert measured["scroll"] <= 390, (path, measured)
            assert measured["outside"] == 0, (path, measured)

        driver.get(f"{stack.api_url}/admin/page/orders")
        search = driver.find_element(By.ID, "q")
        search.send_keys("chen")
        driver.find_element(By.ID, "apply").click()
        wait.until(ec.url_contains("q=chen"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#orders tr[data-order]")
        assert sorted(r.find_element(By.CSS_SELECTOR, ".player").text for r in rows) == [
            "Casey Chen",
            "Riley Chen",
        ]
        casey = driver.find_element(By.CSS_SELECTOR, f"tr[data-order='{families['casey']['id']}']")
        assert "dead" in casey.find_element(By.CSS_SELECTOR, ".link").text
        assert overflow(driver)["scroll"] <= 390

        casey.find_element(By.CSS_SELECTOR, "button.cancel").click()
        notice = wait.until(ec.presence_of_element_located((By.ID, "notice")))
        assert f"Order {families['casey']['id']} is cancelled" in notice.text
        assert "q=chen" in driver.current_url  # back to the same search
        assert stack.api.get(f"/orders/{families['casey']['id']}").json()["status"] == "cancelled"
        row = driver.find_element(By.CSS_SELECTOR, f"tr[data-order='{families['casey']['id']}']")
        assert row.get_attribute("data-state") == "cancelled"
        assert row.find_elements(By.CSS_SELECTOR, "button") == []
        assert overflow(driver)["scroll"] <= 390

        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.get(f"{stack.api_url}/admin/page/orders")
        assert overflow(driver) == {"width": 1280, "scroll": 1280, "outside": 0}
