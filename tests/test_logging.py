"""``LOG_FORMAT=json``: every line on stderr is one JSON object, whoever logged it (our
structlog events, uvicorn, Alembic, any standard-library logger) and tracebacks included.

Each check runs in a process of its own: configuring logging is global and cached by
structlog, and must never leak into the other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.procs import start_api


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\nin:\n{text}")
    return out


SCRIPT = textwrap.dedent(
    """
    import logging, structlog
    from basketball_api.logging_setup import configure_logging

    configure_logging("INFO", "json")
    structlog.get_logger("basketball_api.refresher").info("refresh_succeeded", tournament=3)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started [\x1b[36m%d\x1b[0m]"}
    )
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/metrics", "1.1", 200
    )
    logging.getLogger("alembic.runtime.migration").info("Running upgrade  -> 0001, initial")
    logging.getLogger("stripe").info("dropped: below WARNING")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    try:
        raise KeyError("gone")
    except KeyError:
        structlog.get_logger("basketball_api.webhooks").exception("webhook_failed")
    """
)


def test_every_line_is_json_whoever_logs_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )

    events = _json_lines(done.stderr)
    assert done.stdout == ""
    by_event = {e["event"]: e for e in events}
    assert by_event["refresh_succeeded"]["tournament"] == 3
    assert by_event["refresh_succeeded"]["logger"] == "basketball_api.refresher"
    assert by_event["Started server process [42]"]["logger"] == "uvicorn.error"
    assert "color_message" not in by_event["Started server process [42]"]
    assert by_event['127.0.0.1:1 - "GET /metrics HTTP/1.1" 200']["level"] == "info"
    assert "Running upgrade  -> 0001, initial" in by_event
    assert not any("dropped" in e["event"] for e in events)
    for name, exc_type in (
        ("Exception in ASGI application", "ValueError"),
        ("webhook_failed", "KeyError"),
    ):
        error = by_event[name]
        assert error["level"] == "error"
        (frame_group,) = error["exception"]
        assert frame_group["exc_type"] == exc_type
        assert frame_group["frames"], error
        assert not any("locals" in frame for frame in frame_group["frames"]), error
    assert all({"timestamp", "level", "event"} <= set(e) for e in events)


def test_serve_and_migrate_log_only_json(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'api.db'}"
    env = {
        "PATH": str(Path(sys.executable).parent),
        "DATABASE_URL": database_url,
        "LOG_FORMAT": "json",
    }
    migrate = subprocess.run(
        [str(Path(sys.executable).with_name("basketball-api")), "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    migrated = _json_lines(migrate.stderr + migrate.stdout)
    assert any(e["event"].startswith("Running upgrade") for e in migrated), migrated
    assert any(e["event"] == "database_migrated" for e in migrated), migrated

    api = start_api(
        tmp_path,
        database_url=database_url,
        stripe_api_base="http://127.0.0.1:9",
        stripe_max_network_retries=0,
        refresh_interval_seconds=300,
    )
    try:
        httpx.get(f"{api.url}/metrics", timeout=5)
        httpx.get(f"{api.url}/nowhere", timeout=5)
    finally:
        api.stop()

    events = _json_lines(api.log_text())
    loggers = {e.get("logger") for e in events}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any(e["event"].startswith("Uvicorn running on") for e in events)
    assert any("GET /nowhere" in e["event"] for e in events)
