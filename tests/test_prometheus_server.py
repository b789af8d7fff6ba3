"""Prometheus on loopback: the stranded-orders alert fires and resolves on a real server.

A tiny exporter served from the test stands in for the service; the rules are the ones
derived from the PrometheusRule, with every ``for:`` cut to 0s so the alert fires within
seconds.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from tests import prometheus_server, rules_io
from tests.prometheus_server import (
    PROMETHEUS,
    PROMTOOL,
    PrometheusError,
    PrometheusServer,
    promtool_check_metrics,
)

pytestmark = pytest.mark.prometheus
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian package prometheus)"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)

STRANDED = "BasketballApiStrandedOrders"


class Exporter:
    """The stranded-order gauge on a loopback port, as one replica would expose it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.expired = Gauge(
            "basketball_api_pending_orders_with_expired_session",
            "Orders in pending whose Checkout Session has expired.",
            ["category"],
            registry=self.registry,
        )
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exporter = Exporter()
    yield exporter
    exporter.close()


@needs_prometheus
def test_stranded_orders_alert_fires_then_resolves(exporter: Exporter, tmp_path: Path) -> None:
    for category in ("tournament", "monthly", "jersey"):
        exporter.expired.labels(category=category).set(0)
    exporter.expired.labels(category="tournament").set(2)
    rules = rules_io.write_rules_file(tmp_path, for_duration="0s")

    with PrometheusServer(
        targets=[exporter.target],
        rule_files=[rules],
        scrape_interval="1s",
        target_labels={"namespace": "basketball-api"},
    ) as prom:
        prom.wait_for_scrape(timeout=20)
        assert prom.targets_health() == {f"http://{exporter.target}/metrics": "up"}
        assert prom.query_values('up{job="basketball-api"}') == {
            frozenset(
                {
                    "__name__": "up",
                    "instance": exporter.target,
                    "job": "basketball-api",
                    "namespace": "basketball-api",
                }.items()
            ): 1
        }
        alert = prom.wait_for_alert(STRANDED, "firing", {"category": "tournament"}, timeout=20)

        assert alert is not None
        assert alert["labels"] == {
            "alertname": STRANDED,
            "category": "tournament",
            "namespace": "basketball-api",
            "severity": "warning",
        }
        assert float(alert["value"]) == 2
        assert alert["annotations"]["description"].startswith(
            "2 tournament order(s) in basketball-api are pending"
        )
        firing = {a["labels"].get("category") for a in prom.alerts() if a["state"] == "firing"}
        assert "monthly" not in firing
        assert "jersey" not in firing
        samples = prom.query_values(
            'basketball_api_pending_orders_with_expired_session{job="basketball-api"}'
        )
        assert (
            samples[
                frozenset(
                    {
                        "__name__": "basketball_api_pending_orders_with_expired_session",
                        "category": "tournament",
                        "instance": exporter.target,
                        "job": "basketball-api",
                        "namespace": "basketball-api",
                    }.items()
                )
            ]
            == 2
        )

        exporter.expired.labels(category="tournament").set(0)

        assert (
            prom.wait_for_alert(STRANDED, "inactive", {"category": "tournament"}, timeout=20)
            is None
        )


@needs_prometheus
def test_server_stops_its_own_process(exporter: Exporter) -> None:
    prom = PrometheusServer(targets=[exporter.target])
    with prom:
        pid, port, workdir = prom.pid, prom.port, prom.workdir
        assert prom.config()["scrape_configs"][0]["job_name"] == "basketball-api"
        assert prom.query("vector(1)")[0]["value"][1] == "1"

    assert pid is not None
    assert prom.pid is None
    assert workdir is not None
    assert not workdir.exists()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass


@needs_prometheus
def test_a_broken_rule_file_fails_start_with_the_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(
        "groups:\n- name: x\n  rules:\n  - alert: X\n    expr: max by (category (x)\n",
        encoding="utf-8",
    )

    with pytest.raises(PrometheusError, match="exited") as failure:
        PrometheusServer(rule_files=[broken]).start()

    assert "broken.rules.yml" in str(failure.value)
    assert "parse error" in str(failure.value)


@needs_prometheus
def test_query_errors_are_reported(tmp_path: Path) -> None:
    with PrometheusServer() as prom, pytest.raises(PrometheusError, match="bad_data"):
        prom.query("max by (")


@needs_promtool
def test_promtool_check_metrics_accepts_client_output_and_flags_problems() -> None:
    registry = CollectorRegistry()
    Gauge("basketball_api_up", "1 while the process serves.", registry=registry).set(1)
    Counter("basketball_api_webhook_errors", "Refused webhooks.", ["reason"], registry=registry)
    good = generate_latest(registry).decode()

    assert promtool_check_metrics(good).returncode == 0

    bad = promtool_check_metrics("# TYPE orders counter\norders 1\n")
    assert bad.returncode != 0
    assert '"_total" suffix' in bad.stdout + bad.stderr


@needs_prometheus
def test_a_port_taken_before_start_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = iter([busy.getsockname()[1], prometheus_server.free_loopback_port()])
        monkeypatch.setattr(prometheus_server, "free_loopback_port", lambda: next(ports))

        with PrometheusServer() as prom:
            assert prom.port != busy.getsockname()[1]
            assert prom.query("vector(1)")[0]["value"][1] == "1"
