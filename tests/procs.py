"""The API as real operating-system processes: ``basketball-api serve`` on a loopback port.

Each process gets its settings from the environment (as a pod would), writes its logs to a
file of its own, and is stopped by its process id only: ``stop()`` sends SIGTERM and waits,
``kill()`` sends SIGKILL at once (a pod evicted mid-request).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiProcess:
    """One ``basketball-api serve`` process."""

    port: int
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    argv: list[str] | None = None  # default: ``basketball-api serve --port <port>``
    ready_path: str = "/health"
    _log_file: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, timeout: float = 30.0) -> ApiProcess:
        """Spawn the process and wait until ``ready_path`` answers 200."""
        self._log_file = self.log_path.open("ab")
        argv = self.argv or ["-m", "basketball_api", "serve", "--port", str(self.port)]
        self.popen = subprocess.Popen(
            [sys.executable, *argv],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"the API exited with {self.popen.returncode} at start-up:\n{self.log_text()}"
                )
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"no answer on {self.ready_path} in time:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL if it lingers; returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._close_log()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL now: no shutdown, in-flight requests die with the process."""
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(15)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines (``LOG_FORMAT=json``) as dicts; other lines are skipped.

        structlog and the standard library's handlers write to the same stream under different
        locks, so another line can land between a JSON object and its newline: each JSON
        object is decoded from the start of its line, whatever follows it.
        """
        decoder = json.JSONDecoder()
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(decoder.raw_decode(line)[0])
                except ValueError:
                    continue
        return out


#: A rate limit no test reaches (tests of the limits set their own).
UNLIMITED = "1000000/minute"


def api_env(settings: Mapping[str, object]) -> dict[str, str]:
    """The parent's environment without any API setting, plus ``settings`` (upper-cased)."""
    env = {k: v for k, v in os.environ.items() if not _is_setting(k)}
    env.update({k.upper(): str(v) for k, v in settings.items() if v is not None})
    env.setdefault("LOG_FORMAT", "json")
    # One test client is one address: without this its orders would soon be 429s.
    env.setdefault("ORDER_RATE_LIMIT", UNLIMITED)
    env.setdefault("PAY_LINK_RATE_LIMIT", UNLIMITED)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _is_setting(name: str) -> bool:
    from basketball_api.settings import Settings

    return name.lower() in Settings.model_fields


def start_api(log_dir: Path, name: str = "api", **settings: object) -> ApiProcess:
    """Start one API process with ``settings`` as environment variables."""
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = ApiProcess(free_port(), log_dir / f"{name}.log", api_env(settings))
    return proc.start()


def start_sandbox(log_dir: Path, name: str = "sandbox", *flags: str) -> ApiProcess:
    """The Stripe sandbox in a process of its own (``python -m stripe_sandbox``), so its work
    stays off the measuring process's interpreter lock and memory."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = ApiProcess(
        port,
        log_dir / f"{name}.log",
        api_env({}),
        argv=["-m", "stripe_sandbox", "--port", str(port), *flags],
        ready_path="/_sandbox/status",
    )
    return proc.start()


@contextmanager
def api_processes(log_dir: Path, count: int, **settings: object) -> Iterator[list[ApiProcess]]:
    """``count`` API processes sharing ``settings``; each stopped by its pid afterwards."""
    procs: list[ApiProcess] = []
    try:
        for i in range(count):
            procs.append(start_api(log_dir, f"api{i}", **settings))
        yield procs
    finally:
        for p in procs:
            p.stop()


class TcpProxy:
    """A loopback TCP relay to ``upstream`` that can be cut and restored.

    ``cut()`` closes every relayed connection and refuses new ones (they are accepted and
    closed at once), as a network partition or a dead database server looks to a client;
    ``restore()`` lets connections through again. The upstream itself is never touched.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        import threading

        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        with suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def cut(self) -> None:
        self._down = True
        with self._lock:
            victims = list(self._open)
        for s in victims:
            self._drop(s)

    def restore(self) -> None:
        self._down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._thread.join(5)
        self._listener.close()


PG_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def temporary_postgres(
    prefix: str = "basketball_reliability", *, migrate: bool = True
) -> Iterator[str]:
    """A fresh database on the PostgreSQL server of ``TEST_DATABASE_URL``, migrated by
    Alembic and holding the standard catalogue (``migrate=False``: empty, no schema at all),
    dropped afterwards (the server itself is never stopped or reconfigured)."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url
    from tests.standard_catalogue import migrate_with_catalogue

    admin = make_url(PG_ADMIN_URL)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name, drivername="postgresql+psycopg").render_as_string(
        hide_password=False
    )
    try:
        if migrate:
            migrate_with_catalogue(url)
        yield url
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
