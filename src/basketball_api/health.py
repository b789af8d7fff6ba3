"""Liveness and readiness, for the kubelet's probes.

- ``GET /health`` (liveness) answers from memory on the event loop: it never touches the
  database or the worker threads, so a dead database or a saturated thread pool never gets a
  pod restarted. It fails (503) only when restarting helps: the refresher's task has died.
- ``GET /health/ready`` (readiness) fails (503) while the database cannot answer ``SELECT 1``
  within ``HEALTH_DB_TIMEOUT_SECONDS``, so the Service stops sending requests that could only
  fail. It opens a connection of its own, asynchronously, rather than borrowing one from the
  request pool in a worker thread: a pool exhausted by requests stuck on the database would
  otherwise hang the probe instead of failing it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import make_url

from basketball_api import access
from basketball_api.deps import Services, get_services

router = APIRouter(tags=["ops"])


def _refresh_report(services: Services) -> dict[str, object]:
    last = services.refresher.last_success_at
    return {
        "succeeded_once": services.refresher.counts is not None,
        "last_success_age_seconds": round(time.time() - last, 1) if last else None,
        "running": services.refresher.alive,
    }


@router.get(
    "/health",
    responses={503: {"description": "The refresher's task has died"}},
    dependencies=[access.PUBLIC],
)
async def liveness(request: Request) -> JSONResponse:
    """Liveness: the process serves and its refresher runs. Never touches the database."""
    services = get_services(request)
    refresh = _refresh_report(services)
    alive = bool(refresh["running"])
    return JSONResponse(
        {"status": "ok" if alive else "refresher_dead", "refresh": refresh},
        200 if alive else 503,
    )


@router.get(
    "/health/ready",
    responses={503: {"description": "The database is unreachable"}},
    dependencies=[access.PUBLIC],
)
async def readiness(request: Request) -> JSONResponse:
    """Readiness: the database answers within the configured timeout."""
    services = get_services(request)
    timeout = services.settings.health_db_timeout_seconds
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await ping_database(services.settings.database_url, timeout)
    except (TimeoutError, OSError, psycopg.Error, sqlite3.Error) as e:
        return JSONResponse(
            {
                "status": "unavailable",
                "code": "database",
                "detail": f"database unreachable: {type(e).__name__}",
            },
            503,
        )
    took = round((time.perf_counter() - started) * 1000, 1)
    return JSONResponse({"status": "ok", "database": {"latency_ms": took}})


async def ping_database(database_url: str, connect_timeout: float) -> None:
    """``SELECT 1`` on a fresh connection; raises the driver's error when it cannot."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        # connect_timeout is whole seconds in libpq; the asyncio timeout around us is exact.
        conn = await psycopg.AsyncConnection.connect(
            conninfo, connect_timeout=max(1, round(connect_timeout)), autocommit=True
        )
        async with conn:
            await conn.execute("SELECT 1")
        return
    if url.get_backend_name() == "sqlite":
        # The event loop's default executor, not the worker threads requests use.
        await asyncio.to_thread(_ping_sqlite, url.database or ":memory:", connect_timeout)
        return
    raise OSError(f"no readiness check for {url.get_backend_name()}")


def _ping_sqlite(path: str, timeout: float) -> None:
    # The schema must exist, so a deleted or never-migrated file counts as unreachable.
    uri = path if path == ":memory:" else f"file:{path}?mode=rw"
    conn: Any = sqlite3.connect(uri, uri=path != ":memory:", timeout=timeout)
    try:
        conn.execute("SELECT 1 FROM alembic_version").fetchall()
    finally:
        conn.close()
