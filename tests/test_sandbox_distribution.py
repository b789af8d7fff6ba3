"""The Stripe sandbox is a distribution of its own: the service's wheel does not carry it,
the service never imports it, and the CLI commands that need it say how to install it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run first in each child: any `import stripe_sandbox` then raises ImportError, as it does
# where only the service's wheel is installed.
WITHOUT_SANDBOX = "import sys\nsys.modules['stripe_sandbox'] = None\n"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_service_wheel_lists_only_the_service_package() -> None:
    service = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sandbox = tomllib.loads((ROOT / "sandbox" / "pyproject.toml").read_text())
    assert service["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "src/basketball_api"
    ]
    assert sandbox["project"]["name"] == "basketball-stripe-sandbox"
    assert sandbox["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "src/stripe_sandbox"
    ]
    assert not (ROOT / "src" / "stripe_sandbox").exists()


def test_the_built_service_wheel_has_no_sandbox_module(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("basketball_api-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "stripe_sandbox" not in tops
    assert "basketball_api" in tops


def test_the_sandbox_wheel_carries_its_parameter_grammar(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT / "sandbox"),
         "-w", str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("basketball_stripe_sandbox-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"stripe_sandbox/param_spec.json", "stripe_sandbox/grammar.py"} <= names
    assert not any(n.startswith("basketball_api/") for n in names)


def test_the_service_imports_and_builds_its_app_without_the_sandbox() -> None:
    # Skipped: the demo (it drives the sandbox, and the CLI checks first), the entry point
    # and the Alembic scripts (they run only inside Alembic).
    code = WITHOUT_SANDBOX + (
        "import importlib, pkgutil\n"
        "import basketball_api\n"
        "skip = ('basketball_api.demo', 'basketball_api.__main__', 'basketball_api.migrations')\n"
        "for m in pkgutil.walk_packages(basketball_api.__path__, 'basketball_api.'):\n"
        "    if not m.name.startswith(skip):\n"
        "        importlib.import_module(m.name)\n"
        "from basketball_api.app import create_app\n"
        "create_app(start_refresher=False)\n"
        "print('ok')\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_cli_commands_that_need_the_sandbox_say_how_to_install_it() -> None:
    for command in ("stripe-sandbox", "demo"):
        code = WITHOUT_SANDBOX + (
            f"sys.argv = ['basketball-api', {command!r}]\n"
            "from basketball_api.cli import main\n"
            "main()\n"
        )
        result = _python(code)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "pip install -e ./sandbox" in result.stderr, result.stderr
        assert "make install" in result.stderr
        assert "Traceback" not in result.stderr
