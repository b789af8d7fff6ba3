"""Write the rule groups of the PrometheusRule manifest as a plain Prometheus rules file.

``deploy/kubernetes/prometheusrule.yaml`` is the only place the alert rules are written.
The Prometheus Operator reads that manifest; promtool and a Prometheus without the operator
read plain rule files, which this tool derives from the manifest's ``.spec``::

    python deploy/tools/extract_rules.py                   # rules on stdout
    python deploy/tools/extract_rules.py -o basketball-api.rules.yml

Derived files are build output: generate them, never commit or edit them.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "kubernetes" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/kubernetes/prometheusrule.yaml by deploy/tools/extract_rules.py.\n"
    "# Edit the manifest, not this file.\n"
)


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as literal blocks, as humans do."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def load_prometheus_rule(path: Path = DEFAULT_SOURCE) -> dict[str, Any]:
    """The PrometheusRule manifest at ``path``, refusing anything else."""
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    if len(documents) != 1:
        raise ValueError(f"{path}: expected one YAML document, found {len(documents)}")
    manifest = documents[0]
    if not isinstance(manifest, dict) or manifest.get("kind") != "PrometheusRule":
        raise ValueError(f"{path}: not a PrometheusRule")
    if manifest.get("apiVersion") != "monitoring.coreos.com/v1":
        raise ValueError(f"{path}: apiVersion must be monitoring.coreos.com/v1")
    if not isinstance(manifest.get("spec"), dict) or not manifest["spec"].get("groups"):
        raise ValueError(f"{path}: spec.groups is empty")
    return manifest


def rules_from_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The rules file content: the manifest's ``.spec`` (``groups``), copied unchanged."""
    return copy.deepcopy(manifest["spec"])


def render(rules: dict[str, Any]) -> str:
    """Rules as YAML text, with a header naming the source."""
    body = yaml.dump(
        rules,
        Dumper=_BlockStyleDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1000,
    )
    return HEADER + body


def extract(source: Path = DEFAULT_SOURCE) -> str:
    """The plain rules file derived from the PrometheusRule manifest at ``source``."""
    return render(rules_from_manifest(load_prometheus_rule(source)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=DEFAULT_SOURCE,
        help="PrometheusRule manifest (default: deploy/kubernetes/prometheusrule.yaml)",
    )
    parser.add_argument("-o", "--output", type=Path, help="rules file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = extract(args.source)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
