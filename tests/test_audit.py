"""``make audit`` (scripts/audit.py) fails when it could not audit, instead of reporting a clean
bill of health for dependencies it never looked up."""

from __future__ import annotations

import json

from scripts.audit import COULD_NOT_AUDIT, judge


def report(*dependencies: dict[str, object]) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


NOT_FOUND = "Dependency not found on PyPI and could not be audited: fastapi (0.1)"


def test_every_dependency_not_found_is_a_failed_audit() -> None:
    code, lines = judge(0, report({"name": "fastapi", "skip_reason": NOT_FOUND}), "")

    assert code == COULD_NOT_AUDIT
    assert lines[0] == f"NOT AUDITED fastapi: {NOT_FOUND}"
    assert lines[-1].startswith("audit FAILED: 1 of 1 dependencies could not be audited")


def test_one_dependency_not_audited_fails_the_audit() -> None:
    code, _ = judge(
        0,
        report(
            {"name": "uvicorn", "version": "1", "vulns": []},
            {"name": "fastapi", "skip_reason": NOT_FOUND},
        ),
        "",
    )
    assert code == COULD_NOT_AUDIT


def test_nothing_to_audit_is_a_failed_audit() -> None:
    assert judge(0, report(), "")[0] == COULD_NOT_AUDIT


def test_unreachable_advisory_service_is_a_failed_audit() -> None:
    code, lines = judge(1, "", "Traceback ...\nrequests.exceptions.ConnectionError: no route")

    assert code == COULD_NOT_AUDIT
    assert lines == [
        "audit FAILED: pip-audit could not run (requests.exceptions.ConnectionError: no route)"
    ]


def test_a_vulnerability_is_named_with_its_fix() -> None:
    vuln = {"id": "PYSEC-1", "fix_versions": ["2.0"], "aliases": [], "description": ""}
    code, lines = judge(1, report({"name": "jinja2", "version": "1.0", "vulns": [vuln]}), "")

    assert code == 1
    assert lines[0] == "VULNERABLE jinja2 1.0: PYSEC-1 (fixed in 2.0)"


def test_all_audited_and_clean_passes() -> None:
    code, lines = judge(0, report({"name": "uvicorn", "version": "1", "vulns": []}), "")

    assert code == 0
    assert lines == ["1 dependencies audited, no known vulnerabilities"]
