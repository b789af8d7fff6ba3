"""``make contract`` and the contract suite's target choice: without a key it says how to run
and runs nothing (exit 0); a live key is refused by make and by the suite itself; a test key
lying in the environment is never used unless the Stripe target is asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STRIPE_TEST_KEY", "CONTRACT_TARGET")}
    env.update(changes)
    return env


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    # -o: take the virtualenv as installed (the test runs inside it).
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "contract", *args],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_make_contract_without_a_key_says_how_and_runs_nothing() -> None:
    result = _make()
    assert result.returncode == 0, result.stderr
    assert "make contract STRIPE_TEST_KEY=sk_test_" in result.stdout
    assert "nothing was run" in result.stdout
    assert "passed" not in result.stdout


def test_make_contract_refuses_a_live_key() -> None:
    result = _make("STRIPE_TEST_KEY=sk_live_abcdef")
    assert result.returncode != 0
    assert "refusing" in result.stderr
    assert "passed" not in result.stdout
    assert "sk_live_abcdef" not in result.stdout + result.stderr


def _suite(env: dict[str, str], *select: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_suite_refuses_a_live_key_before_running_anything() -> None:
    env = _env(CONTRACT_TARGET="stripe", STRIPE_TEST_KEY="rk_live_abcdef")
    result = _suite(env, "tests/contract")
    assert result.returncode == 4  # pytest's usage error
    assert "never runs live" in result.stdout + result.stderr


def test_a_key_in_the_environment_alone_keeps_the_suite_on_the_sandbox() -> None:
    env = _env(STRIPE_TEST_KEY="sk_test_from_a_shell_profile")
    select = "tests/contract/test_checkout_sessions.py::test_a_wrong_key_is_an_authentication_error"
    result = _suite(env, select)
    assert result.returncode == 0, result.stdout
    assert "1 passed" in result.stdout
