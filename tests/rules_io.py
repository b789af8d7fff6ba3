"""The alert rules as the tests see them: derived from the PrometheusRule, never copied.

``deploy/kubernetes/prometheusrule.yaml`` is the single source of the rule text. The
extraction itself lives in ``deploy/tools/extract_rules.py`` (also a CLI for operators); this
module loads it and adds what tests need: a rules file in a temporary directory, a copy with
every ``for:`` shortened for live Prometheus tests, and the names of the service's metrics.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_RULE = REPO_ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
EXTRACTOR = REPO_ROOT / "deploy" / "tools" / "extract_rules.py"
PROMTOOL_TESTS_DIR = REPO_ROOT / "deploy" / "prometheus" / "tests"
# The name the promtool test files give in ``rule_files``.
RULES_FILE_NAME = "basketball-api.rules.yml"

# Metrics agreed for the service that a version may not export yet; the rules treat a
# missing one as "nothing to report" (promtool tests feed them as series).
ANNOUNCED_METRICS = frozenset(
    {
        "basketball_api_pending_orders_with_failed_payment",
        "basketball_api_pending_orders_with_missing_session",
        "basketball_api_stripe_clock_offset_seconds",
        "basketball_api_poller_lease_held",
    }
)

# Every metric the rules and the dashboard may use: the service's contract, the HTTP
# metrics of prometheus-fastapi-instrumentator, and Prometheus's own ``up``.
SERVICE_METRICS = ANNOUNCED_METRICS | frozenset(
    {
        "basketball_api_up",
        "basketball_api_webhook_errors_total",
        "basketball_api_webhook_events_total",
        "basketball_api_pending_orders_with_expired_session",
        "basketball_api_pending_orders_with_completed_session",
        "basketball_api_pending_orders_with_open_session",
        "basketball_api_pending_orders_refresh_last_success_timestamp_seconds",
        "basketball_api_pending_orders_refresh_duration_seconds",
        "basketball_api_pending_orders_refreshes_total",
        "basketball_api_pending_orders_refresh_errors_total",
        "basketball_api_stripe_requests_total",
        "basketball_api_refresh_interval_seconds",
        "basketball_api_category_urgent",
        "basketball_api_order_creation_failures_total",
        "basketball_api_payments_needing_review",
        "basketball_api_stranded_order_transitions_total",
        "basketball_api_pending_orders_snoozed",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_count",
        "http_request_size_bytes_sum",
        "http_request_size_bytes_count",
        "http_response_size_bytes_sum",
        "http_response_size_bytes_count",
    }
)
# A metric name, not part of a recording rule's name (``level:metric:operations``).
_METRIC_NAME = re.compile(r"(?<![\w:])(?:basketball_api|http)_[A-Za-z0-9_]+(?![\w:])")


def _load_extractor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extract_rules", EXTRACTOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


extract_rules = _load_extractor()


def manifest() -> dict[str, Any]:
    """The PrometheusRule as committed."""
    result: dict[str, Any] = extract_rules.load_prometheus_rule(PROMETHEUS_RULE)
    return result


def rules() -> dict[str, Any]:
    """The plain rules (``{"groups": [...]}``) derived from the PrometheusRule."""
    result: dict[str, Any] = yaml.safe_load(extract_rules.extract(PROMETHEUS_RULE))
    return result


def all_rules(rule_groups: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every rule, recording and alerting, in file order."""
    groups = (rule_groups or rules())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerting_rules(rule_groups: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every alerting rule, in file order."""
    return [rule for rule in all_rules(rule_groups) if "alert" in rule]


def recording_rules(rule_groups: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every recording rule, in file order."""
    return [rule for rule in all_rules(rule_groups) if "record" in rule]


def with_for(rule_groups: dict[str, Any], duration: str) -> dict[str, Any]:
    """A copy of ``rule_groups`` with every alert's ``for:`` set to ``duration``."""
    shortened = copy.deepcopy(rule_groups)
    for rule in alerting_rules(shortened):
        rule["for"] = duration
    return shortened


def write_rules_file(directory: Path, *, for_duration: str | None = None) -> Path:
    """Write the derived rules to ``directory/basketball-api.rules.yml`` and return the path.

    With ``for_duration``, every ``for:`` is rewritten first, so a live Prometheus shows an
    alert firing within seconds instead of minutes.
    """
    path = directory / RULES_FILE_NAME
    if for_duration is None:
        path.write_text(extract_rules.extract(PROMETHEUS_RULE), encoding="utf-8")
    else:
        path.write_text(extract_rules.render(with_for(rules(), for_duration)), encoding="utf-8")
    return path


def metric_names(expr: str) -> set[str]:
    """The service and HTTP metric names a PromQL expression refers to."""
    return set(_METRIC_NAME.findall(expr))
