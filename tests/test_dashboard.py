"""The Grafana dashboard: well-formed, wired to the data source variable, and every query
valid PromQL over metrics the service exports.

Queries are checked by promtool: each becomes a recording rule (Grafana variables replaced
by plain values) in a generated rules file, which ``promtool check rules`` parses with
Prometheus's own parser.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests import rules_io

DASHBOARD = rules_io.REPO_ROOT / "deploy" / "grafana" / "basketball-api.json"
PROMTOOL = shutil.which("promtool")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Plain values for the dashboard's variables and Grafana's built-in ones.
VARIABLE_VALUES = {
    "job": "basketball-api",
    "namespace": "basketball-api",
    "category": "tournament|monthly",
    "__rate_interval": "2m",
    "__interval": "1m",
    "__range": "1h",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def _dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return result


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed children included, rows themselves excluded."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation query."""
    queries = [
        (f"panel {p['id']} {p['title']!r} target {t['refId']}", t["expr"])
        for p in _panels(dashboard)
        for t in p.get("targets", [])
    ]
    queries += [
        (f"annotation {a['name']!r}", a["expr"])
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]
    return queries


def _substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in VARIABLE_VALUES:
            raise KeyError(f"unknown dashboard variable ${name} in {expr}")
        return VARIABLE_VALUES[name]

    return _VARIABLE.sub(value, expr)


def test_dashboard_is_json_of_a_current_schema() -> None:
    dashboard = _dashboard()

    assert dashboard["uid"] == "basketball-api"
    assert dashboard["title"] == "basketball-api"
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["id"] is None


def test_data_source_and_category_are_variables() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    category = variables["category"]
    assert category["type"] == "query"
    assert category["datasource"] == DATASOURCE
    assert "basketball_api_pending_orders_with_expired_session" in category["definition"]
    assert category["includeAll"] is True
    assert set(variables) - {"datasource"} <= set(VARIABLE_VALUES)


def test_every_panel_and_query_uses_the_data_source_variable() -> None:
    dashboard = _dashboard()
    for panel in _panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == DATASOURCE


def test_panels_have_unique_ids_and_titles_and_do_not_overlap() -> None:
    dashboard = _dashboard()
    ids = [p["id"] for p in dashboard["panels"]] + [
        c["id"] for p in dashboard["panels"] for c in p.get("panels", [])
    ]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in _panels(dashboard)]
    assert len(titles) == len(set(titles))
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_queries_use_only_metrics_the_service_exports() -> None:
    for where, expr in _queries(_dashboard()):
        unknown = rules_io.metric_names(expr) - rules_io.SERVICE_METRICS
        assert not unknown, f"{where} uses unknown metrics {sorted(unknown)}"


def test_every_service_metric_has_a_panel() -> None:
    used = set().union(*(rules_io.metric_names(e) for _, e in _queries(_dashboard())))
    wanted = {m for m in rules_io.SERVICE_METRICS if m.startswith("basketball_api_")}
    wanted |= {"http_requests_total", "http_request_duration_seconds_bucket"}

    assert wanted - used == set()


def test_pending_order_panels_follow_the_category_variable() -> None:
    for where, expr in _queries(_dashboard()):
        if "basketball_api_pending_orders_with_" in expr:
            assert 'category=~"$category"' in expr, where


def test_runbook_link_matches_the_alerts() -> None:
    (link,) = [x for x in _dashboard()["links"] if x["title"] == "Runbook"]
    runbook_urls = {r["annotations"]["runbook_url"] for r in rules_io.alerting_rules()}

    assert {url.split("#")[0] for url in runbook_urls} == {link["url"]}


def test_unknown_variables_are_caught() -> None:
    with pytest.raises(KeyError, match="categroy"):
        _substitute('basketball_api_up{category=~"$categroy"}')
    assert _substitute('x{c=~"${category:regex}"}[$__rate_interval]') == (
        'x{c=~"tournament|monthly"}[2m]'
    )


@pytest.mark.prometheus
@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    queries = _queries(_dashboard())
    rules = [
        {"record": f"dashboard:query_{n}", "expr": _substitute(expr)}
        for n, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False),
        encoding="utf-8",
    )

    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    legend = "\n".join(f"dashboard:query_{n} = {where}" for n, (where, _) in enumerate(queries))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{legend}"
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout
