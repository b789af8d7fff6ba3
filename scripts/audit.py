"""Audit the dependencies for known vulnerabilities, and fail loudly when nothing was audited.

pip-audit reports a package it could not look up ("Dependency not found on PyPI and could
not be audited") as a skip and still exits 0 with "No known vulnerabilities found": a mirror
without PyPI's JSON API, or no network, makes a clean report out of no audit at all. This
wrapper reads pip-audit's JSON report and exits

- 0 when every dependency was audited and none has a known vulnerability,
- 1 when some dependency has one (each is listed),
- 2 when the audit could not be done, or not for every dependency (each skip is listed).

``AUDIT_SERVICE`` picks pip-audit's advisory source: ``pypi`` (default, PyPI's JSON API) or
``osv`` (api.osv.dev). Extra arguments go to pip-audit, e.g. ``-r requirements/main.txt``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

COULD_NOT_AUDIT = 2


def run_pip_audit(args: list[str]) -> tuple[int, str, str]:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    service = os.environ.get("AUDIT_SERVICE", "pypi")
    command = [str(pip_audit), "--format", "json", "--vulnerability-service", service, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


def judge(returncode: int, stdout: str, stderr: str) -> tuple[int, list[str]]:
    """The exit code and the lines to print for one pip-audit run."""
    try:
        report: dict[str, Any] = json.loads(stdout)
    except ValueError:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return COULD_NOT_AUDIT, [f"audit FAILED: pip-audit could not run ({last})"]
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = [d for d in dependencies if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    lines = []
    for d in vulnerable:
        for v in d["vulns"]:
            fixed = ", ".join(v.get("fix_versions") or []) or "no fix yet"
            lines.append(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in {fixed})")
    for d in skipped:
        lines.append(f"NOT AUDITED {d['name']}: {d['skip_reason']}")
    if vulnerable:
        lines.append(f"{len(vulnerable)} vulnerable dependenc(y/ies) of {len(dependencies)}")
        return 1, lines
    if not audited or skipped:
        lines.append(
            f"audit FAILED: {len(skipped)} of {len(dependencies)} dependencies could not be "
            "audited, so this is no clean bill of health. Run it where the advisory database "
            "is reachable (docs/operations.md, 'Auditing dependencies')."
        )
        return COULD_NOT_AUDIT, lines
    if returncode != 0:
        return COULD_NOT_AUDIT, [f"audit FAILED: pip-audit exited {returncode}: {stderr.strip()}"]
    lines.append(f"{len(audited)} dependencies audited, no known vulnerabilities")
    return 0, lines


def main(argv: list[str] | None = None) -> int:
    code, lines = judge(*run_pip_audit(list(sys.argv[1:] if argv is None else argv)))
    stream = sys.stdout if code == 0 else sys.stderr
    for line in lines:
        print(line, file=stream)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
