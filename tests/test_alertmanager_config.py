"""The example Alertmanager configuration: valid for amtool, and routing every alert of the
rules where its severity says — pages at any hour, warnings and notices in club hours only."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from tests import rules_io

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (Debian package prometheus-alertmanager)"
)
CONFIG = rules_io.REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RECEIVER_BY_SEVERITY = {
    "critical": "on-call-pager",
    "warning": "club-chat",
    "info": "treasurer-digest",
}
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _config() -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return result


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def _route_of(labels: dict[str, str]) -> str:
    proc = _amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


@pytest.mark.prometheus
@needs_amtool
def test_amtool_accepts_the_config() -> None:
    proc = _amtool("check-config", str(CONFIG))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.prometheus
@needs_amtool
@pytest.mark.parametrize("rule", rules_io.alerting_rules(), ids=lambda r: r["alert"])
def test_each_alert_reaches_the_receiver_of_its_severity(rule: dict[str, Any]) -> None:
    labels = {
        "alertname": rule["alert"],
        "namespace": "basketball-api",
        "category": "tournament",
        **rule["labels"],
    }

    assert _route_of(labels) == RECEIVER_BY_SEVERITY[rule["labels"]["severity"]]


@pytest.mark.prometheus
@needs_amtool
def test_staging_never_pages() -> None:
    labels = {"alertname": "BasketballApiDown", "severity": "critical"}

    assert _route_of({**labels, "namespace": "basketball-api-staging"}) == "club-chat"
    assert _route_of({**labels, "namespace": "basketball-api"}) == "on-call-pager"


def _routes() -> dict[str, dict[str, Any]]:
    """The first-level routes, by the severity (or namespace) they match."""
    found = {}
    for route in _config()["route"]["routes"]:
        (matcher,) = route["matchers"]
        found[matcher] = route
    return found


def test_only_pages_ignore_club_hours() -> None:
    routes = _routes()

    assert "active_time_intervals" not in routes['severity="critical"']
    for matcher in ('severity="warning"', 'severity="info"', 'namespace=~".+-staging"'):
        assert routes[matcher]["active_time_intervals"] == ["club-hours"], matcher


def test_alerts_are_grouped_by_namespace_and_category() -> None:
    assert _config()["route"]["group_by"] == ["namespace", "category"]


def _in_interval(interval: dict[str, Any], moment: datetime) -> bool:
    """Whether ``moment`` is inside one Alertmanager time interval (weekdays + times only)."""
    assert set(interval) <= {"weekdays", "times", "location"}, "unsupported fields"
    local = moment.astimezone(ZoneInfo(interval.get("location", "UTC")))
    days: set[str] = set()
    for spec in interval["weekdays"]:
        first, _, last = spec.partition(":")
        days.update(WEEKDAYS[WEEKDAYS.index(first) : WEEKDAYS.index(last or first) + 1])
    if WEEKDAYS[local.weekday()] not in days:
        return False
    now = local.time()
    return any(
        time.fromisoformat(t["start_time"]) <= now < time.fromisoformat(t["end_time"])
        for t in interval["times"]
    )


def _club_hours(moment: datetime) -> bool:
    (named,) = [t for t in _config()["time_intervals"] if t["name"] == "club-hours"]
    return any(_in_interval(interval, moment) for interval in named["time_intervals"])


@pytest.mark.parametrize(
    ("local_time", "expected"),
    [
        ("2026-12-01 03:00", False),  # a Tuesday night: a Stripe outage waits for morning
        ("2026-12-01 07:59", False),
        ("2026-12-01 08:00", True),
        ("2026-12-01 19:30", True),  # a weekday evening: practice, volunteers around
        ("2026-12-01 21:00", False),
        ("2026-12-05 10:00", True),  # Saturday morning: tournament day
        ("2026-12-05 20:00", False),
        ("2026-12-06 02:00", False),
    ],
)
def test_club_hours_leave_the_night_alone(local_time: str, expected: bool) -> None:
    moment = datetime.fromisoformat(local_time).replace(tzinfo=ZoneInfo("America/Denver"))

    assert _club_hours(moment) is expected


def _names_in(matchers: list[str]) -> set[str]:
    names: set[str] = set()
    for matcher in matchers:
        match = re.fullmatch(r'alertname(=~|=|!=)"([\w|.+]+)"', matcher)
        if match and match.group(1) != "!=" and ".+" not in match.group(2):
            names.update(match.group(2).split("|"))
    return names


def test_inhibit_rules_name_only_alerts_that_exist() -> None:
    alerts = {r["alert"] for r in rules_io.alerting_rules()}
    rules = _config()["inhibit_rules"]

    for rule in rules:
        named = _names_in(rule["source_matchers"]) | _names_in(rule["target_matchers"])
        assert named, rule
        assert named <= alerts, named - alerts
        assert "namespace" in rule["equal"]


def test_receivers_are_the_three_of_the_routing() -> None:
    config = _config()

    assert {r["name"] for r in config["receivers"]} == set(RECEIVER_BY_SEVERITY.values())
    assert Path(CONFIG).read_text(encoding="utf-8").count("example.org") == 3
