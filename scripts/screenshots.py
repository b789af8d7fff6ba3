"""Screenshots of the treasurer's page at desktop and phone width, for docs/.

    .venv/bin/python scripts/screenshots.py

Runs the sandbox and the API on loopback (a throwaway SQLite file), takes a dozen orders through
the API and the SDK as parents would, and photographs ``/admin/page/orders`` in headless
Chromium at 1280 px and at 390 px (a phone): ``docs/treasurer-desktop.png`` and
``docs/treasurer-phone.png``.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM_FLAGS  # noqa: E402
from tests.stack import ADMIN_TOKEN, Stack, running_stack  # noqa: E402
from tests.standard_catalogue import migrate_with_catalogue  # noqa: E402

FAMILIES = [
    ("tournament", "Riley Chen", "chen@example.org", "dead"),
    ("tournament", "Casey Chen", "chen@example.org", "open"),
    ("tournament", "Jordan Lee", "mia.lee@example.org", "paid"),
    ("tournament", "Sam Ortiz", "ortiz.family@example.net", "dead"),
    ("monthly", "Ava Kim", "kims@example.com", "paid"),
    ("monthly", "Noah Patel", "patel.home@example.org", "dead"),
    ("monthly", "Mila Novak", "novak@example.org", "open"),
    ("jersey", "Leo Garcia", "garcia@example.org", "cancelled"),
    ("jersey", "Zoe Martin", "zoe.m@example.org", "none"),
]


def seed(stack: Stack) -> None:
    for category, player, email, fate in FAMILIES:
        order = stack.order(
            category, player_name=player, parent_email=email, create_checkout=fate != "none"
        )
        if fate == "dead":
            stack.sdk.v1.checkout.sessions.expire(order["checkout_session_id"])
        elif fate == "paid":
            stack.sandbox.pay(order["checkout_session_id"])
        elif fate == "cancelled":
            stack.api.post(f"/orders/{order['id']}/cancel").raise_for_status()
    stack.sandbox.wait_for_webhooks(timeout=10)
    stack.refresh()


def browser(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def shoot(driver: Any, url: str, width: int, height: int, mobile: bool, out: Path) -> None:
    """The top ``height`` CSS pixels of the page (a phone: about two screens)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile},
    )
    driver.get(url)
    full = driver.execute_script("return document.documentElement.scrollHeight")
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, full), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'screens.db'}"
        migrate_with_catalogue(database_url)
        with running_stack(database_url) as stack:
            seed(stack)
            driver = browser(str(Path(tmp) / "profile"))
            try:
                driver.get(f"{stack.api_url}/admin")
                driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
                driver.find_element(By.ID, "login").click()
                page = f"{stack.api_url}/admin/page/orders"
                shoot(driver, page, 1280, 2000, False, ROOT / "docs" / "treasurer-desktop.png")
                shoot(driver, page, 390, 1700, True, ROOT / "docs" / "treasurer-phone.png")
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
