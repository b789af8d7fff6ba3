"""Migrations started at once (two pods' init containers) against an empty PostgreSQL: both
succeed, one after the other, and the schema is at head once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from tests.procs import temporary_postgres

from basketball_api.db import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """A database with no schema at all, dropped afterwards."""
    with temporary_postgres("basketball_migrate", migrate=False) as url:
        yield url


def _cli() -> list[str]:
    installed = Path(sys.executable).with_name("basketball-api")
    if installed.exists():
        return [str(installed)]
    found = shutil.which("basketball-api")
    return [found] if found else [sys.executable, "-m", "basketball_api"]


def _head() -> str:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "basketball_api:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


@pytest.mark.parametrize("count", [2, 3])
def test_concurrent_migrates_on_an_empty_database_all_succeed(
    empty_postgres: str, tmp_path: Path, count: int
) -> None:
    go = tmp_path / "go"
    # Each process waits for the same file, so the interpreters start together and their
    # upgrade transactions overlap, as two init containers scheduled at once do.
    waiter = f"while [ ! -e '{go}' ]; do sleep 0.01; done; exec \"$@\""
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LOG_FORMAT")},
        "DATABASE_URL": empty_postgres,
        "LOG_FORMAT": "json",
    }
    procs = [
        subprocess.Popen(
            ["sh", "-c", waiter, "wait-for-go", *_cli(), "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]
    time.sleep(0.3)
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]

    assert [p.returncode for p in procs] == [0] * count, "\n----\n".join(outputs)
    assert all("Traceback" not in out for out in outputs), outputs
    engine = make_engine(empty_postgres)
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    finally:
        engine.dispose()
    assert [v for (v,) in versions] == [_head()]
