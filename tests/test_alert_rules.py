"""The alert rules: derived faithfully from the PrometheusRule, valid, and behaving as meant.

Behaviour is specified by promtool unit tests under ``deploy/prometheus/tests/``; they run
here against a rules file extracted from ``deploy/kubernetes/prometheusrule.yaml`` into a
temporary directory, so there is never a second copy of the rule text to drift.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests import rules_io

from basketball_api.metrics import Metrics
from basketball_api.settings import Settings

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)
TEST_FILES = sorted(rules_io.PROMTOOL_TESTS_DIR.glob("*.yml"))
SEVERITIES = {"critical", "warning", "info"}  # the kube-prometheus convention


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(str(a) for a in proc.args)
    return f"$ {command}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _alert_rule_tests(test_file: Path) -> list[dict[str, Any]]:
    content = yaml.safe_load(test_file.read_text(encoding="utf-8"))
    return [case for test in content["tests"] for case in test.get("alert_rule_test", [])]


# --- one source of truth ------------------------------------------------------------------


def test_extracted_rules_are_exactly_the_manifest_spec() -> None:
    manifest = rules_io.manifest()
    extracted = rules_io.rules()

    assert extracted == manifest["spec"]
    rebuilt = {**{k: v for k, v in manifest.items() if k != "spec"}, "spec": extracted}
    assert rebuilt == manifest


def test_extraction_is_stable_text() -> None:
    text = rules_io.extract_rules.extract(rules_io.PROMETHEUS_RULE)

    assert rules_io.extract_rules.render(yaml.safe_load(text)) == text
    assert text.startswith("# Generated from deploy/kubernetes/prometheusrule.yaml")


def test_cli_writes_the_same_rules_to_a_file_and_to_stdout(tmp_path: Path) -> None:
    expected = rules_io.extract_rules.extract(rules_io.PROMETHEUS_RULE)
    out = tmp_path / "rules.yml"

    to_file = _run([sys.executable, str(rules_io.EXTRACTOR), "-o", str(out)])
    to_stdout = _run([sys.executable, str(rules_io.EXTRACTOR), str(rules_io.PROMETHEUS_RULE)])

    assert to_file.returncode == 0, _explain(to_file)
    assert out.read_text(encoding="utf-8") == expected
    assert to_stdout.returncode == 0, _explain(to_stdout)
    assert to_stdout.stdout == expected


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nspec: {groups: []}\n",
        "kind: PrometheusRule\n---\nkind: PrometheusRule\n",
    ],
    ids=["not-a-rule", "no-groups", "two-documents"],
)
def test_extractor_refuses_anything_but_one_prometheusrule(tmp_path: Path, text: str) -> None:
    source = tmp_path / "manifest.yaml"
    source.write_text(text, encoding="utf-8")

    with pytest.raises(ValueError, match=r"manifest\.yaml"):
        rules_io.extract_rules.extract(source)


def test_no_rules_file_is_committed_next_to_the_manifest() -> None:
    copies = []
    for path in (rules_io.REPO_ROOT / "deploy").rglob("*.y*ml"):
        if path == rules_io.PROMETHEUS_RULE:
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict) and "groups" in document:
                copies.append(path)
    assert copies == []


def test_for_can_be_shortened_without_touching_the_source(tmp_path: Path) -> None:
    path = rules_io.write_rules_file(tmp_path, for_duration="0s")
    shortened = yaml.safe_load(path.read_text(encoding="utf-8"))

    assert {rule["for"] for rule in rules_io.alerting_rules(shortened)} == {"0s"}
    assert [r["expr"] for r in rules_io.alerting_rules(shortened)] == [
        r["expr"] for r in rules_io.alerting_rules()
    ]
    assert "0s" not in {rule["for"] for rule in rules_io.alerting_rules()}


# --- promtool -------------------------------------------------------------------------------


@pytest.mark.prometheus
@needs_promtool
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    path = rules_io.write_rules_file(tmp_path)

    proc = _run([PROMTOOL, "check", "rules", str(path)])

    assert proc.returncode == 0, _explain(proc)
    assert f"SUCCESS: {len(rules_io.all_rules())} rules found" in proc.stdout, _explain(proc)


@pytest.mark.prometheus
@needs_promtool
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(tmp_path: Path, test_file: Path) -> None:
    assert PROMTOOL is not None
    rules_io.write_rules_file(tmp_path)
    shutil.copy(test_file, tmp_path / test_file.name)

    proc = _run([PROMTOOL, "test", "rules", test_file.name], cwd=tmp_path)

    assert proc.returncode == 0, _explain(proc)
    assert "SUCCESS" in proc.stdout, _explain(proc)


def test_promtool_test_files_read_the_derived_rules_file() -> None:
    assert TEST_FILES, "no promtool tests under deploy/prometheus/tests"
    for test_file in TEST_FILES:
        content = yaml.safe_load(test_file.read_text(encoding="utf-8"))
        assert content["rule_files"] == [rules_io.RULES_FILE_NAME], test_file.name


@pytest.mark.parametrize("alert", [r["alert"] for r in rules_io.alerting_rules()])
def test_every_alert_is_tested_firing_and_quiet(alert: str) -> None:
    cases = [c for f in TEST_FILES for c in _alert_rule_tests(f) if c["alertname"] == alert]

    assert any(c.get("exp_alerts") for c in cases), f"no test shows {alert} firing"
    assert any(not c.get("exp_alerts") for c in cases), f"no test shows {alert} quiet"


# --- what each alert carries ----------------------------------------------------------------


@pytest.mark.parametrize("rule", rules_io.alerting_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_annotations_and_a_wait(rule: dict[str, Any]) -> None:
    assert rule["alert"].startswith("BasketballApi")
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    if "absent(" not in rule["expr"]:  # absent() has no labels or value worth telling
        assert "{{" in rule["annotations"]["description"], "description should be templated"
    assert rule["for"] not in ("", "0s", "0")


def test_rules_refer_only_to_metrics_the_service_exports() -> None:
    for rule in rules_io.alerting_rules():
        unknown = rules_io.metric_names(rule["expr"]) - rules_io.SERVICE_METRICS
        assert not unknown, f"{rule['alert']} uses unknown metrics {sorted(unknown)}"


def test_stranded_orders_aggregate_replicas_with_max() -> None:
    (record,) = [
        r
        for r in rules_io.recording_rules()
        if r["record"] == "namespace_category:basketball_api_stranded_orders_unhandled:max"
    ]

    for gauge in (
        "basketball_api_pending_orders_with_expired_session",
        "basketball_api_pending_orders_with_failed_payment",
        "basketball_api_pending_orders_with_missing_session",
        "basketball_api_pending_orders_snoozed",
    ):
        assert f"max by (namespace, category) ({gauge})" in record["expr"], gauge
    assert "sum" not in record["expr"]


def _expected_alerts() -> list[dict[str, Any]]:
    return [
        alert
        for test_file in TEST_FILES
        for case in _alert_rule_tests(test_file)
        for alert in case.get("exp_alerts") or []
    ]


def test_every_expected_alert_carries_its_namespace() -> None:
    alerts = _expected_alerts()

    assert alerts
    for alert in alerts:
        assert alert["exp_labels"].get("namespace"), alert


def test_only_a_person_must_act_now_pages() -> None:
    critical = {
        r["alert"] for r in rules_io.alerting_rules() if r["labels"]["severity"] == "critical"
    }

    assert critical == {
        "BasketballApiDown",
        "BasketballApiStrandedOrdersSurge",
        "BasketballApiUrgentOrdersStranded",
        "BasketballApiOrderCreationFailing",
    }


# --- the runbook and the operations guide follow the rules ----------------------------------

DOCS = rules_io.REPO_ROOT / "docs"
RUNBOOK_URL = "https://github.com/basketball-club/basketball-api/blob/main/docs/runbook.md"


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(markdown: Path) -> set[str]:
    text = markdown.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # no headings in code blocks
    return {_github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("rule", rules_io.alerting_rules(), ids=lambda r: r["alert"])
def test_runbook_url_points_at_the_alerts_own_runbook_section(rule: dict[str, Any]) -> None:
    base, _, anchor = rule["annotations"]["runbook_url"].partition("#")

    assert base == RUNBOOK_URL
    assert anchor == _github_anchor(rule["alert"])
    assert anchor in _anchors(DOCS / "runbook.md")


@pytest.mark.parametrize("doc", ["runbook.md", "operations.md"])
def test_links_between_the_operations_docs_resolve(doc: str) -> None:
    text = (DOCS / doc).read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(([\w.-]*\.md)?#([\w-]+)\)", text):
        path = DOCS / (target or doc)
        assert path.exists(), f"{doc} links to missing {target}"
        assert anchor in _anchors(path), f"{doc} links to missing {target or doc}#{anchor}"


def test_operations_guide_tables_every_alert_with_severity_and_for() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    rows = {
        name: (severity, wait)
        for name, severity, wait in re.findall(
            r"^\| \[(\w+)\]\(runbook\.md#\w+\) \| (\w+) \| (\w+) \|", text, flags=re.M
        )
    }

    assert rows == {
        r["alert"]: (r["labels"]["severity"], r["for"]) for r in rules_io.alerting_rules()
    }


# --- what the service exports for the rules ---------------------------------------------


def _exported_names(metrics: Metrics) -> set[str]:
    """Metric names as Prometheus stores them (counters with ``_total``)."""
    names = set()
    for family in metrics.registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_metrics_the_rules_use_are_exported_or_announced() -> None:
    exported = _exported_names(Metrics())
    service = {m for m in rules_io.SERVICE_METRICS if m.startswith("basketball_api_")}

    assert service - rules_io.ANNOUNCED_METRICS <= exported


def test_urgent_categories_are_a_setting_exported_per_category(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("URGENT_CATEGORIES", "tournament, jersey")
    metrics = Metrics()

    metrics.publish_urgent_categories(frozenset(Settings().urgent_categories))

    text = metrics.render().decode()
    assert 'basketball_api_category_urgent{category="tournament"} 1.0' in text
    assert 'basketball_api_category_urgent{category="jersey"} 1.0' in text
    assert 'basketball_api_category_urgent{category="monthly"} 0.0' in text
    monkeypatch.setenv("URGENT_CATEGORIES", "")
    assert Settings().urgent_categories == frozenset()
    monkeypatch.setenv("URGENT_CATEGORIES", "tournaments")
    with pytest.raises(ValueError, match="urgent_categories"):
        Settings()
