"""The Kubernetes manifests: valid for the API server and consistent with each other.

Core kinds are validated with kubernetes-validate (strict: unknown fields are errors). The
ServiceMonitor and the PrometheusRule are validated with jsonschema against the Prometheus
Operator's own CRD schemas (``tests/data/prometheus-operator/``), with objects closed the way
the API server's strict field validation closes them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from tests import rules_io

MANIFEST_DIR = rules_io.REPO_ROOT / "deploy" / "kubernetes"
DOCKERFILE = rules_io.REPO_ROOT / "deploy" / "Dockerfile"
SCHEMA_DIR = Path(__file__).parent / "data" / "prometheus-operator"
# The oldest Kubernetes release the manifests promise to work on, and the newest known.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
OPERATOR_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.schema.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.schema.json",
}
NOT_APPLIED = {"kustomization.yaml", "secret.example.yaml"}
# Secret -> the keys the pod reads from it; the SMTP ones are optional (email off without).
SECRET_KEYS = {
    "basketball-api": {
        "DATABASE_URL",
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "ADMIN_TOKEN",
        "OPERATOR_TOKENS",
    },
    "basketball-api-migrate": {"DATABASE_URL"},
    "basketball-api-smtp": {
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_STARTTLS",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_SENDER",
    },
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


MANIFEST_FILES = sorted(MANIFEST_DIR.glob("*.yaml"))
DOCUMENTS = [
    (path.name, doc)
    for path in MANIFEST_FILES
    if path.name != "kustomization.yaml"
    for doc in _documents(path)
]
CORE = [(n, d) for n, d in DOCUMENTS if (d["apiVersion"], d["kind"]) not in OPERATOR_SCHEMAS]
CUSTOM = [(n, d) for n, d in DOCUMENTS if (d["apiVersion"], d["kind"]) in OPERATOR_SCHEMAS]


def _id(item: tuple[str, dict[str, Any]]) -> str:
    name, doc = item
    return f"{name}:{doc['kind']}"


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in DOCUMENTS if d["kind"] == kind]
    return doc


# --- operator schemas -----------------------------------------------------------------------


def _for_python(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema as the API server applies it, for Python's jsonschema.

    Objects that list their properties refuse unknown ones (strict field validation), and
    Go's ``^(?i)...`` patterns get their flag in front, where Python's ``re`` wants it.
    """
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and pattern.startswith("^(?i)"):
                node["pattern"] = "(?i)^" + pattern.removeprefix("^(?i)")
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for key, value in node.items():
                if key == "properties":
                    for sub in value.values():
                        visit(sub)
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(schema)
    return schema


def _list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """``x-kubernetes-list-map-keys``: items of a map-list must differ in their keys."""
    if not isinstance(instance, list):
        return
    seen = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(item.get(k) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for keys {keys}: {key}")
            seen.add(key)


OperatorSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-map-keys": _list_map_keys}
)


@cache
def _operator_validator(api_version: str, kind: str) -> Any:
    path = SCHEMA_DIR / OPERATOR_SCHEMAS[(api_version, kind)]
    schema = _for_python(json.loads(path.read_text(encoding="utf-8")))
    OperatorSchemaValidator.check_schema(schema)
    return OperatorSchemaValidator(schema)


def _operator_errors(doc: dict[str, Any]) -> list[str]:
    validator = _operator_validator(doc["apiVersion"], doc["kind"])
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


# --- every manifest is valid ----------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_every_manifest_parses_into_named_objects(path: Path) -> None:
    documents = _documents(path)

    assert documents, f"{path.name} is empty"
    for doc in documents:
        assert {"apiVersion", "kind"} <= set(doc), path.name
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"].startswith("basketball-api"), path.name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("item", CORE, ids=_id)
def test_core_objects_are_valid_kubernetes(item: tuple[str, dict[str, Any]], version: str) -> None:
    _, doc = item
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("item", CUSTOM, ids=_id)
def test_custom_resources_match_the_operator_schema(item: tuple[str, dict[str, Any]]) -> None:
    _, doc = item
    assert _operator_errors(doc) == []


def test_both_custom_resources_are_checked() -> None:
    assert sorted(d["kind"] for _, d in CUSTOM) == ["PrometheusRule", "ServiceMonitor"]


def _broken_rule(change: str) -> dict[str, Any]:
    doc = copy.deepcopy(_one("PrometheusRule"))
    # The first alerting rule (recording rules have no `for` or annotations to break).
    group = next(g for g in doc["spec"]["groups"] if any("alert" in r for r in g["rules"]))
    rule = next(r for r in group["rules"] if "alert" in r)
    if change == "for-in-words":
        rule["for"] = "ten minutes"
    elif change == "no-expr":
        del rule["expr"]
    elif change == "misspelt-field":
        rule["annotation"] = rule.pop("annotations")
    elif change == "duplicate-group":
        doc["spec"]["groups"].append(copy.deepcopy(group))
    elif change == "nameless-group":
        group["name"] = ""
    elif change == "labels-not-strings":
        rule["labels"] = {"severity": ["page"]}
    return doc


@pytest.mark.parametrize(
    "change",
    [
        "for-in-words",
        "no-expr",
        "misspelt-field",
        "duplicate-group",
        "nameless-group",
        "labels-not-strings",
    ],
)
def test_operator_schema_rejects_a_broken_rule(change: str) -> None:
    assert _operator_errors(_broken_rule(change)), f"{change} was accepted"


def test_operator_schema_rejects_a_broken_servicemonitor() -> None:
    doc = copy.deepcopy(_one("ServiceMonitor"))
    doc["spec"]["endpoints"][0]["interval"] = "30 seconds"
    doc["spec"]["endpoints"][0]["scheme"] = "gopher"

    errors = _operator_errors(doc)

    assert any("interval" in e for e in errors), errors
    assert any("scheme" in e for e in errors), errors


def test_kubernetes_validate_rejects_an_unknown_field() -> None:
    doc = copy.deepcopy(_one("Deployment"))
    doc["spec"]["replica"] = doc["spec"].pop("replicas")

    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


# --- the pieces fit together ----------------------------------------------------------------


def test_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    kustomization = _documents(MANIFEST_DIR / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    present = {p.name for p in MANIFEST_FILES} - NOT_APPLIED

    assert listed == present
    assert kustomization["namespace"] == _one("Namespace")["metadata"]["name"]
    images = {c["image"].rsplit(":", 1)[0] for c in _pod_containers()}
    assert images == {i["name"] for i in kustomization["images"]}


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Deployment")["spec"]["template"]["spec"]
    return spec


def _pod_containers() -> list[dict[str, Any]]:
    spec = _pod_spec()
    return [*spec["initContainers"], *spec["containers"]]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_service_and_servicemonitor_reach_the_pods() -> None:
    deployment, service, monitor = _one("Deployment"), _one("Service"), _one("ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (api,) = deployment["spec"]["template"]["spec"]["containers"]

    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http"
    assert port["targetPort"] in {p["name"] for p in api["ports"]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "http",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    # The operator names the job after the Service; the rules expect job="basketball-api".
    assert service["metadata"]["name"] == "basketball-api"
    assert "jobLabel" not in monitor["spec"]


def test_pod_disruption_budget_keeps_a_replica() -> None:
    pdb, deployment = _one("PodDisruptionBudget"), _one("Deployment")

    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_deployment_runs_two_single_worker_replicas_after_migrating() -> None:
    deployment = _one("Deployment")
    spec = _pod_spec()
    (migrate,) = spec["initContainers"]
    (api,) = spec["containers"]

    assert deployment["spec"]["replicas"] == 2
    assert migrate["command"] == ["basketball-api", "migrate"]
    assert api["command"] == ["basketball-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert migrate["image"] == api["image"]
    assert api["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def _from_secrets(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: ref["secretKeyRef"]
        for name, ref in _env(container).items()
        if isinstance(ref, dict) and "secretKeyRef" in ref
    }


def test_deployment_takes_secrets_from_the_secret_and_settings_from_plain_env() -> None:
    (api,) = _pod_spec()["containers"]
    env = _env(api)
    refs = _from_secrets(api)
    by_secret: dict[str, set[str]] = {}
    for name, ref in refs.items():
        assert ref["key"] == name
        by_secret.setdefault(ref["name"], set()).add(name)
    assert by_secret == {k: v for k, v in SECRET_KEYS.items() if k != "basketball-api-migrate"}
    # SMTP is optional (no Secret: no email); the service's own secrets are not.
    assert all(ref.get("optional") is True for ref in refs.values() if ref["name"].endswith("smtp"))
    optional = {
        n for n, ref in refs.items() if ref["name"] == "basketball-api" and ref.get("optional")
    }
    assert optional == {"OPERATOR_TOKENS"}
    assert env["ENVIRONMENT"] == "production"
    assert env["STRIPE_API_BASE"] == "https://api.stripe.com"
    assert env["REFRESH_INTERVAL_SECONDS"] == "300"


def test_migrations_get_their_own_credential_and_no_other_secret() -> None:
    (migrate,) = _pod_spec()["initContainers"]

    assert _from_secrets(migrate) == {
        "DATABASE_URL": {"name": "basketball-api-migrate", "key": "DATABASE_URL"}
    }
    assert _env(migrate)["LOG_FORMAT"] == "json"


def test_example_secrets_hold_exactly_the_keys_and_only_placeholders() -> None:
    secrets = _documents(MANIFEST_DIR / "secret.example.yaml")

    assert {s["metadata"]["name"]: set(s["stringData"]) for s in secrets} == SECRET_KEYS
    for secret in secrets:
        values = [
            v for k, v in secret["stringData"].items() if k not in ("SMTP_PORT", "SMTP_STARTTLS")
        ]
        assert all("CHANGE-ME" in value for value in values), secret["metadata"]["name"]
        assert "data" not in secret


def test_containers_are_locked_down_and_sized() -> None:
    spec = _pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in _pod_containers():
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


def test_dockerfile_matches_the_deployment() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    (cmd,) = [line.removeprefix("CMD ") for line in instructions if line.startswith("CMD ")]
    (api,) = _pod_spec()["containers"]

    froms = [line for line in instructions if line.startswith("FROM ")]
    # Two stages, both on the base named by the build argument (a registry image or a local one).
    assert froms == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
    assert any(line.startswith("ARG BASE_IMAGE=") for line in instructions)
    (user,) = users  # the final stage only; the build stage runs as root, and is thrown away
    assert re.fullmatch(r"\d+:\d+", user)
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0
    assert (uid, gid) == (
        _pod_spec()["securityContext"]["runAsUser"],
        _pod_spec()["securityContext"]["runAsGroup"],
    )
    assert "EXPOSE 8000" in instructions
    assert json.loads(cmd) == api["command"]
    assert "HEALTHCHECK" not in text.replace("no HEALTHCHECK", "")
