"""/docs and /redoc work offline: every script, style and icon they load comes from this
service, none from a CDN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from basketball_api.app import create_app
from basketball_api.settings import Settings

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'docs.db'}")
    with TestClient(create_app(settings, start_refresher=False)) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_documentation_pages_load_nothing_from_another_host(client: TestClient, page: str) -> None:
    html = client.get(page)

    assert html.status_code == 200
    assert not EXTERNAL.search(html.text), html.text
    assert "cdn.jsdelivr.net" not in html.text
    assert "fonts.googleapis.com" not in html.text
    references = REFERENCE.findall(html.text)
    assert references, html.text
    for ref in references:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 1000, ref


def test_swagger_ui_points_at_our_schema_and_asks_no_validator(client: TestClient) -> None:
    html = client.get("/docs").text

    assert "'/openapi.json'" in html
    assert "validator.swagger.io" not in html
    assert '"validatorUrl": null' in html


def test_unknown_asset_is_a_json_404(client: TestClient) -> None:
    r = client.get("/docs/assets/../../etc/passwd")
    assert r.status_code == 404
    r = client.get("/docs/assets/nope.js")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


@pytest.mark.browser
def test_swagger_ui_renders_every_operation_offline(chromium: Any, tmp_path: Path) -> None:
    """A real browser, with every request to another host refused: the page still renders."""
    import threading

    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    from tests.procs import free_port

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'docs.db'}")
    app = create_app(settings, start_refresher=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        WebDriverWait(chromium, 10).until(lambda _: server.started)
        chromium.execute_cdp_cmd("Network.enable", {})
        # Every HTTPS address and the CDNs FastAPI's own pages use fail, as offline.
        blocked = ["https://*", "*cdn.jsdelivr.net*", "*unpkg.com*", "*googleapis.com*"]
        chromium.execute_cdp_cmd("Network.setBlockedURLs", {"urls": blocked})
        chromium.get(f"http://127.0.0.1:{port}/docs")
        WebDriverWait(chromium, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        )
        shown = chromium.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        paths = {e.text.replace("\u200b", "") for e in shown}
        assert {"/products", "/orders", "/health"} <= paths, paths
        assert not chromium.find_elements(By.CSS_SELECTOR, ".errors-wrapper")
    finally:
        server.should_exit = True
        thread.join(10)
