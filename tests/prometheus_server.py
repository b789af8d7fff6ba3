"""A real Prometheus and a real Alertmanager on loopback for tests, a webhook receiver that
records what Alertmanager sends, and promtool's metrics linter.

Starts Debian's ``prometheus`` binary with a generated configuration (1 s scrape and
evaluation intervals by default), the given scrape targets, rule files and Alertmanagers, a
temporary TSDB, and a free loopback port; stops exactly the process it started::

    rules = rules_io.write_rules_file(tmp_path, for_duration="0s")
    with PrometheusServer(targets=["127.0.0.1:8000"], rule_files=[rules]) as prom:
        prom.wait_for_alert("BasketballApiStrandedOrders", labels={"category": "tournament"})
        prom.query("basketball_api_pending_orders_with_expired_session")

Targets are scraped as job ``basketball-api`` (the job name the ServiceMonitor gives in
Kubernetes), so the rules behave as they do in the cluster; ``for_duration="0s"`` gives
rules that fire at the first evaluation instead of after minutes.

``AlertmanagerServer`` does the same for Debian's ``prometheus-alertmanager`` (clustering
off) with a given configuration, and ``WebhookReceiver`` is the HTTP endpoint its
``webhook_configs`` post to.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
import yaml

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
JOB = "basketball-api"

AlertState = Literal["pending", "firing", "inactive"]
T = TypeVar("T")


class PrometheusError(RuntimeError):
    """Prometheus did not start, answered with an error, or never reached the wanted state."""


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition text; exit 0 means no lint problem."""
    if PROMTOOL is None:
        raise PrometheusError("promtool is not installed (Debian package prometheus)")
    return subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class LoopbackServer:
    """One process of a Prometheus-project binary on a free loopback port, started with a
    generated configuration in a temporary directory, for the duration of a ``with`` block.

    Subclasses say what the configuration is (:meth:`config`) and how the binary is called
    (:meth:`arguments`); this class starts it (trying another port when the one picked was
    taken meanwhile), waits for ``/-/ready``, and stops exactly the process it started.
    """

    name = "server"
    config_file = "config.yml"
    package = "Debian package prometheus"

    def __init__(
        self, binary: str | None, *, startup_timeout: float = 30.0, stop_timeout: float = 10.0
    ) -> None:
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    # --- what subclasses say ----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def arguments(self, config_path: Path, storage: Path) -> list[str]:
        raise NotImplementedError

    def state(self) -> str:
        """What the server holds now, for the message of a failed wait."""
        return ""

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / f"{self.name}.log"

    def start(self) -> Self:
        if self.binary is None:
            raise PrometheusError(f"{self.name} is not installed ({self.package})")
        if self._process is not None:
            raise PrometheusError("already started")
        self._client = httpx.Client(timeout=10.0)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-test-"))
        config_path = self.workdir / self.config_file
        config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        # A port picked as free can be taken before the process binds it; try again then.
        for _attempt in range(3):
            self.port = free_loopback_port()
            process = self._spawn(config_path)
            try:
                self._wait_ready()
                return self
            except PrometheusError:
                exited = process.poll() is not None
                self._terminate()
                if not (exited and "address already in use" in self.log()):
                    self.stop()
                    raise
        self.stop()
        raise PrometheusError(f"no free port for {self.title} after 3 attempts")

    @property
    def title(self) -> str:
        return self.name.capitalize()

    def _spawn(self, config_path: Path) -> subprocess.Popen[bytes]:
        assert self.binary is not None
        assert self.workdir is not None
        storage = self.workdir / f"data-{self.port}"
        args = [self.binary, *self.arguments(config_path, storage)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self._process

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PrometheusError(
                    f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                if self._get("/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise PrometheusError(
            f"{self.name} not ready after {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        """Stop the process this object started: SIGTERM, then SIGKILL after a timeout."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=self.stop_timeout)

    def _cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def stop(self) -> None:
        self._terminate()
        if self._client is not None:
            self._client.close()
            self._client = None
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        """Everything the process has logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except (AssertionError, FileNotFoundError):
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The error lines the process logged, then its last ``lines`` lines."""
        logged = self.log().splitlines()
        errors = [line for line in logged if "level=error" in line][:20]
        return "\n".join([*errors, "...", *logged[-lines:]] if errors else logged[-lines:])

    # --- HTTP -------------------------------------------------------------------------

    def _get(
        self, path: str, params: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> httpx.Response:
        if self._client is None:
            raise PrometheusError("not started")
        return self._client.get(f"{self.url}{path}", params=params, timeout=timeout)

    def wait_until(
        self, probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition"
    ) -> T:
        """Poll ``probe`` until it returns something other than None (or falsy)."""
        deadline = time.monotonic() + timeout
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise PrometheusError(
                    f"timed out after {timeout}s waiting for {what}; {self.state()}\n"
                    f"{self.log_tail(10)}"
                )
            time.sleep(0.2)


class PrometheusServer(LoopbackServer):
    """One Prometheus process, for the duration of a ``with`` block."""

    name = "prometheus"
    config_file = "prometheus.yml"

    def __init__(
        self,
        targets: Sequence[str] = (),
        rule_files: Sequence[Path | str] = (),
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str | None = None,
        job: str = JOB,
        metrics_path: str = "/metrics",
        target_labels: Mapping[str, str] | None = None,
        alertmanagers: Sequence[str] = (),
        binary: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            binary or PROMETHEUS, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.job = job
        self.metrics_path = metrics_path
        self.target_labels = dict(target_labels or {})
        self.alertmanagers = list(alertmanagers)

    def config(self) -> dict[str, Any]:
        """The configuration Prometheus is started with."""
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [],
        }
        if self.alertmanagers:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]
            }
        if self.targets:
            static: dict[str, Any] = {"targets": self.targets}
            if self.target_labels:
                static["labels"] = self.target_labels
            config["scrape_configs"].append(
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [static],
                }
            )
        return config

    def arguments(self, config_path: Path, storage: Path) -> list[str]:
        return [
            f"--config.file={config_path}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            # Firing alerts are sent again this often (1 minute by default).
            "--rules.alert.resend-delay=1s",
            "--log.level=info",
        ]

    def state(self) -> str:
        return f"alerts now: {self.alerts()}"

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``data`` of a successful ``/api/v1/...`` answer; PrometheusError otherwise."""
        response = self._get(f"/api/v1/{path}", params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params or {})}: {response.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: for a vector, ``[{"metric": {...}, "value": [t, "v"]}]``."""
        data = self.api("query", {"query": expr})
        if data["resultType"] != "vector":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_values(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """An instant query as ``{frozenset(labels.items()): value}``."""
        return {
            frozenset(sample["metric"].items()): float(sample["value"][1])
            for sample in self.query(expr)
        }

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (``/api/v1/alerts``); resolved ones are not listed."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def targets_health(self) -> dict[str, str]:
        """``{scrape URL: "up" | "down" | "unknown"}`` for every active target."""
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}

    # --- waiting --------------------------------------------------------------------------

    def wait_for_scrape(self, timeout: float = 30.0) -> None:
        """Wait until every target has been scraped successfully."""

        def all_up() -> bool:
            health = self.targets_health()
            return bool(health) and all(h == "up" for h in health.values())

        self.wait_until(all_up, timeout=timeout, what=f"targets up: {self.targets}")

    def wait_for_alert(
        self,
        name: str,
        state: AlertState = "firing",
        labels: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any] | None:
        """Wait until alert ``name`` (with at least ``labels``) is in ``state``.

        Returns the alert as ``/api/v1/alerts`` shows it; for ``"inactive"`` (resolved or
        never active) returns None once no such alert is pending or firing.
        """
        wanted = dict(labels or {})

        def matching() -> list[dict[str, Any]]:
            return [
                a
                for a in self.alerts()
                if a["labels"].get("alertname") == name
                and all(a["labels"].get(k) == v for k, v in wanted.items())
            ]

        what = f"{name}{wanted or ''} {state}"
        if state == "inactive":
            self.wait_until(lambda: not matching(), timeout=timeout, what=what)
            return None
        alert: dict[str, Any] = self.wait_until(
            lambda: next((a for a in matching() if a["state"] == state), None),
            timeout=timeout,
            what=what,
        )
        return alert


class AlertmanagerServer(LoopbackServer):
    """One Alertmanager process (clustering off) with ``config``, for a ``with`` block."""

    name = "alertmanager"
    config_file = "alertmanager.yml"
    package = "Debian package prometheus-alertmanager"

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        binary: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            binary or ALERTMANAGER, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self._config = dict(config)

    @property
    def title(self) -> str:
        return "Alertmanager"

    @property
    def address(self) -> str:
        """``host:port``, as Prometheus's ``alerting`` configuration names it."""
        return f"127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return self._config

    def arguments(self, config_path: Path, storage: Path) -> list[str]:
        return [
            f"--config.file={config_path}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip port, no peers
            "--log.level=info",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds (``/api/v2/alerts``), with its ``status``."""
        response = self._get("/api/v2/alerts")
        if response.status_code != 200:
            raise PrometheusError(f"alertmanager alerts: {response.status_code} {response.text}")
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def state(self) -> str:
        return f"alertmanager holds: {[a['labels'] for a in self.alerts()]}"


class WebhookReceiver:
    """An HTTP endpoint on loopback that records every notification Alertmanager posts.

    Each receiver of the configuration gets its own path (``url_for("on-call-pager")``), so
    a test sees which receiver a notification went to. Notifications are kept in arrival
    order as ``(receiver, payload)``; the payload is Alertmanager's webhook JSON (``status``,
    ``groupLabels``, ``alerts`` with their labels and annotations).
    """

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.notifications.append((self.path.strip("/"), payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads the notifications, not an access log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url_for(self, receiver: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/{receiver}"

    def received(self, receiver: str | None = None) -> list[dict[str, Any]]:
        """Payloads so far, of one receiver or of all."""
        with self._lock:
            return [p for r, p in self.notifications if receiver is None or r == receiver]

    def clear(self) -> None:
        """Forget what was received so far."""
        with self._lock:
            self.notifications.clear()

    def wait_for(
        self,
        probe: Callable[[list[tuple[str, dict[str, Any]]]], bool],
        *,
        timeout: float = 30.0,
        what: str = "notifications",
    ) -> None:
        """Wait until ``probe(notifications)`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = list(self.notifications)
            if probe(seen):
                return
            if time.monotonic() >= deadline:
                raise PrometheusError(f"timed out after {timeout}s waiting for {what}: {seen}")
            time.sleep(0.2)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
