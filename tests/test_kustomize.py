"""What ``kubectl apply -k`` would send: each overlay rendered by kustomize, every object checked
against the real schemas (kubernetes-validate for core kinds, the Prometheus Operator's CRD
schemas for its kinds), and the pieces checked against each other and against the app."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from tests import rules_io
from tests.test_manifests import KUBERNETES_VERSIONS, OPERATOR_SCHEMAS, _operator_errors

from basketball_api.app import create_app

DEPLOY = rules_io.REPO_ROOT / "deploy"
OVERLAYS = {
    "kube-prometheus-stack": DEPLOY / "overlays" / "kube-prometheus-stack",
    "prometheus": DEPLOY / "overlays" / "prometheus",
    "example-club": DEPLOY / "site.example",
}
NAMESPACE = "basketball-api"
# Routes that stay inside the cluster: probes, scrapes and the API documentation.
INTERNAL = {"/metrics", "/health", "/health/ready", "/docs", "/openapi.json", "/redoc"}


def _kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("neither kustomize nor kubectl is installed (scripts/system-deps installs kubectl)")


@cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [*_kustomize_command(), str(directory)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d is not None)


def objects(overlay: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [d for d in render(OVERLAYS[overlay]) if kind is None or d["kind"] == kind]


def one(overlay: str, kind: str, name: str = "basketball-api") -> dict[str, Any]:
    (doc,) = [d for d in objects(overlay, kind) if d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_for_the_api_server(overlay: str) -> None:
    docs = objects(overlay)
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in OPERATOR_SCHEMAS:
            assert _operator_errors(doc) == [], doc["kind"]
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_namespace(overlay: str) -> None:
    for doc in objects(overlay):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_kube_prometheus_stack_selects_the_monitor_and_the_rules() -> None:
    """Its Prometheus ignores ServiceMonitors and PrometheusRules without its release label."""
    for kind in ("ServiceMonitor", "PrometheusRule"):
        labels = one("kube-prometheus-stack", kind)["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack", kind
    monitor = one("kube-prometheus-stack", "ServiceMonitor")
    service = one("kube-prometheus-stack", "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_base_without_overlay_carries_no_release_label() -> None:
    for doc in render(DEPLOY / "kubernetes"):
        assert "release" not in doc["metadata"].get("labels", {}), doc["kind"]


def test_plain_prometheus_overlay_has_no_operator_kinds_and_a_valid_scrape_config(
    tmp_path: Path,
) -> None:
    kinds = {d["kind"] for d in objects("prometheus")}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert {"Deployment", "Service", "Ingress", "NetworkPolicy"} <= kinds

    scrape = yaml.safe_load((OVERLAYS["prometheus"] / "prometheus-scrape.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "basketball-api"  # what the alert rules select on
    rules = rules_io.write_rules_file(tmp_path)
    assert job["kubernetes_sd_configs"] == [
        {"role": "endpoints", "namespaces": {"names": [NAMESPACE]}}
    ]
    # Debian's Prometheus is built without Kubernetes discovery, so promtool checks the rest
    # of the job (relabelling, timeouts) and the rules with static targets in its place.
    checked = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
    checked["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"rule_files": [str(rules)], "scrape_configs": [checked]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/system-deps"
    done = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_serves_the_public_routes_over_tls_and_nothing_internal(overlay: str) -> None:
    ingresses = objects(overlay, "Ingress")
    deployment = one(overlay, "Deployment")
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    public_url = next(e["value"] for e in api["env"] if e["name"] == "PUBLIC_BASE_URL")
    exposed: dict[str, str] = {}
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        assert annotations["cert-manager.io/cluster-issuer"], ingress["metadata"]["name"]
        (tls,) = ingress["spec"]["tls"]
        (rule,) = ingress["spec"]["rules"]
        assert tls["hosts"] == [rule["host"]]
        assert tls["secretName"] == "basketball-api-tls"
        # Parents and Stripe are sent to PUBLIC_BASE_URL: it must be this host, over HTTPS.
        assert urlsplit(public_url).scheme == "https"
        assert urlsplit(public_url).hostname == rule["host"]
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend == {"name": "basketball-api", "port": {"name": "http"}}
            exposed[path["path"]] = path["pathType"]
    assert exposed["/webhooks/stripe"] == "Exact"

    def is_exposed(route: str) -> bool:
        return any(
            route == p or (kind == "Prefix" and route.startswith(p.rstrip("/") + "/"))
            for p, kind in exposed.items()
        )

    routes = set(create_app().openapi()["paths"]) | INTERNAL
    for route in sorted(routes):
        if route in INTERNAL:
            assert not is_exposed(route), f"{route} must stay inside the cluster"
        else:
            assert is_exposed(route), f"{route} is neither routed by an Ingress nor internal"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_lets_in_the_ingress_and_prometheus_and_out_what_the_app_calls(
    overlay: str,
) -> None:
    policy = one(overlay, "NetworkPolicy")
    deployment = one(overlay, "Deployment")
    pod = deployment["spec"]["template"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    port_names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    sources = set()
    for rule in spec["ingress"]:
        assert {p["port"] for p in rule["ports"]} <= port_names
        for peer in rule["from"]:
            sources.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    prometheus_namespace = {
        "kube-prometheus-stack": "monitoring",
        "prometheus": "prometheus",
        "example-club": "monitoring",
    }
    assert sources == {"ingress-nginx", prometheus_namespace[overlay]}
    egress_ports = {(p["port"], p["protocol"]) for r in spec["egress"] for p in r["ports"]}
    assert {(53, "UDP"), (5432, "TCP"), (443, "TCP"), (587, "TCP")} <= egress_ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_over_nodes_and_zones(overlay: str) -> None:
    pod = one(overlay, "Deployment")["spec"]["template"]
    constraints = pod["spec"]["topologySpreadConstraints"]

    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for c in constraints:
        assert c["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still schedules


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_image_for_migrations_and_the_api(overlay: str) -> None:
    spec = one(overlay, "Deployment")["spec"]["template"]["spec"]
    images = {c["image"] for c in (*spec["initContainers"], *spec["containers"])}

    assert len(images) == 1
    assert images <= {"ghcr.io/basketball-club/basketball-api:0.1.0"}


def test_the_example_club_overlay_sets_host_and_public_url_together() -> None:
    (api,) = one("example-club", "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in api["env"]}
    hosts = {r["host"] for i in objects("example-club", "Ingress") for r in i["spec"]["rules"]}

    assert env["PUBLIC_BASE_URL"] == "https://pay.example-club.org"
    assert hosts == {"pay.example-club.org"}
    # The patch replaced one variable; every other one is still there.
    (base_api,) = one("kube-prometheus-stack", "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert {e["name"] for e in api["env"]} == {e["name"] for e in base_api["env"]}
    assert one("example-club", "ServiceMonitor")["metadata"]["labels"]["release"]
