"""An operator's browser on the operator page: signed in, posting forms the way the page's own
forms do (from the same site, with the session's CSRF token)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import httpx2
from fastapi.testclient import TestClient


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page's forms carry no CSRF token"
    return match.group(1)


class OperatorPage:
    def __init__(self, client: TestClient | httpx.Client, token: str) -> None:
        self.client = client
        client.headers["Origin"] = str(client.base_url).rstrip("/")
        r = client.post("/admin/login", data={"token": token}, follow_redirects=True)
        r.raise_for_status()
        self.csrf = csrf_of(client.get("/admin").text)

    def get(self, url: str, **kw: Any) -> httpx.Response | httpx2.Response:
        return self.client.get(url, **kw)

    def post(
        self, url: str, data: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response | httpx2.Response:
        return self.client.post(url, data={**(data or {}), "csrf_token": self.csrf}, **kw)
