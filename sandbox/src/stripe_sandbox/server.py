"""Serving ASGI apps with uvicorn: in a background thread (tests, demos,
benchmarks) or in the foreground (the command line)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Literal

import uvicorn

from .config import SandboxConfig


class BackgroundServer:
    """Runs any ASGI app with uvicorn in a daemon thread on ``host:port``.

    ``port=0`` picks a free port. The socket is bound before the thread starts, so
    :attr:`url` and :attr:`port` are known at once; :meth:`start` returns when the
    server accepts connections (after the app's lifespan startup; pass
    ``lifespan="off"`` for an app without one). After :meth:`stop` the port is free again and a new
    server (for the same app, which keeps its state) may bind it::

        with BackgroundServer(create_app()) as server:
            print(server.url)  # http://127.0.0.1:54321
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        lifespan: Literal["auto", "on", "off"] = "on",
        graceful_shutdown_seconds: int = 1,
        start_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._log_level = log_level
        self._lifespan = lifespan
        self._graceful = graceful_shutdown_seconds
        self._start_timeout = start_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> BackgroundServer:
        """Bind, start serving and wait until connections are accepted."""
        if self.running:
            return self
        # IPPROTO_TCP explicitly: asyncio only turns Nagle off (TCP_NODELAY) on sockets
        # whose proto says TCP, and without it every response waits ~40 ms for an ACK.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port if self.port == 0 else self.port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level=self._log_level,
            access_log=False,
            lifespan=self._lifespan,
            timeout_graceful_shutdown=self._graceful,
            date_header=False,  # apps that need one stamp their own (the sandbox does)
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError(f"the server on {self.url} did not start")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the server on {self.url} did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down (in-flight requests get ``graceful_shutdown_seconds``) and wait
        for the thread; the port is closed when this returns."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._thread = None
        self._server = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(host: str, port: int, config: SandboxConfig) -> None:
    """Run a sandbox in the foreground until interrupted (for the command line)."""
    from .app import create_app

    print(f"Stripe sandbox on http://{host}:{port}  (control: /_sandbox/status)", flush=True)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=1,
        date_header=False,  # the sandbox stamps Date from its own clock
    )
