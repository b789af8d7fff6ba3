"""The probes and the error shape: liveness never waits on the database or the worker threads,
readiness fails while the database is unreachable, and every error is ``{"detail", "code"}``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from tests.procs import TcpProxy

from basketball_api.app import create_app
from basketball_api.deps import get_services
from basketball_api.refresher import Refresher
from basketball_api.settings import Settings


def _settings(database_url: str, **extra: object) -> Settings:
    return Settings(
        database_url=database_url,
        stripe_api_base="http://127.0.0.1:9",  # nothing listens: Stripe is never needed here
        stripe_max_network_retries=0,
        **extra,  # type: ignore[arg-type]
    )


@contextmanager
def client_for(settings: Settings, **kw: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings, **kw), raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        yield c


@contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung database server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_ready_and_live_with_a_reachable_database(database_url: str) -> None:
    with client_for(_settings(database_url), start_refresher=False) as client:
        live, ready = client.get("/health"), client.get("/health/ready")

    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"


@pytest.mark.postgres
def test_database_down_fails_readiness_not_liveness_and_errors_are_json(
    postgres_url: str,
) -> None:
    direct = make_url(postgres_url)
    proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
    try:
        url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        with client_for(_settings(url), start_refresher=False) as client:
            assert client.get("/health/ready").status_code == 200
            assert client.get("/products").status_code == 200
            proxy.cut()
            live = client.get("/health")
            ready = client.get("/health/ready")
            products = client.get("/products")
            proxy.restore()
            again = client.get("/health/ready")
    finally:
        proxy.close()

    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["code"] == "database"
    assert products.status_code == 503
    assert products.headers["content-type"] == "application/json"
    assert products.json() == {
        "detail": "The database is busy or unreachable; nothing was changed, try again.",
        "code": "database",
    }
    assert again.status_code == 200


def test_sqlite_file_never_migrated_fails_readiness(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/never-migrated.db"
    with client_for(_settings(url), start_refresher=False) as client:
        ready = client.get("/health/ready")
        products = client.get("/products")

    assert ready.status_code == 503
    assert products.status_code == 503
    assert products.json()["code"] == "database"


@pytest.mark.postgres
def test_a_hung_database_fails_readiness_within_its_timeout() -> None:
    with black_hole() as port:
        url = f"postgresql://postgres@127.0.0.1:{port}/test"
        settings = _settings(url, health_db_timeout_seconds=0.3)
        with client_for(settings, start_refresher=False) as client:
            ready = client.get("/health/ready")

    assert ready.status_code == 503
    # Cut by our own timeout (0.3 s), not by libpq's connect_timeout (whole seconds).
    assert ready.json()["detail"] == "database unreachable: TimeoutError"


def test_liveness_answers_while_every_worker_thread_is_busy(database_url: str) -> None:
    """Sync routes run on anyio's worker threads; liveness must not need one."""
    app = create_app(_settings(database_url), start_refresher=False)

    async def probe() -> httpx.Response:
        limiter = anyio.to_thread.current_default_thread_limiter()
        borrowers = [object() for _ in range(int(limiter.total_tokens))]
        for b in borrowers:
            await limiter.acquire_on_behalf_of(b)
        try:
            assert limiter.available_tokens == 0
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                with anyio.fail_after(5):
                    return await http.get("/health")
        finally:
            for b in borrowers:
                limiter.release_on_behalf_of(b)

    with TestClient(app) as client:
        assert client.portal is not None  # set inside the with
        live = client.portal.call(probe)

    assert live.status_code == 200


def test_liveness_fails_once_the_refresher_task_has_died(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def dies(self: Refresher) -> None:
        raise RuntimeError("refresher bug")

    monkeypatch.setattr(Refresher, "run", dies)
    with client_for(_settings(database_url)) as client:
        assert client.portal is not None  # set inside the with
        client.portal.call(asyncio.sleep, 0.05)
        live = client.get("/health")

    assert live.status_code == 503
    assert live.json()["status"] == "refresher_dead"


def test_a_bug_is_a_json_500_without_details(database_url: str) -> None:
    app = create_app(_settings(database_url), start_refresher=False)

    def broken() -> None:
        raise RuntimeError("secret internals")

    app.dependency_overrides[get_services] = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/products")

    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "Internal server error", "code": "internal"}


def test_unknown_route_and_method_have_the_error_shape(database_url: str) -> None:
    with client_for(_settings(database_url), start_refresher=False) as client:
        missing = client.get("/no-such-thing")
        wrong = client.delete("/products")

    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found", "code": "not_found"}
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
