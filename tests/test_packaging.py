"""The distributions and the lock files: one version of each package everywhere, the bench
libraries and the Stripe sandbox kept out of what does not need them, and an image context
that holds only what the image is built from."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from tests import rules_io

ROOT = rules_io.REPO_ROOT
LOCK = ROOT / "requirements"
LOCK_FILES = ("main", "dev", "build", "demo", "bench")


def pins(name: str) -> dict[str, str]:
    text = (LOCK / f"{name}.txt").read_text(encoding="utf-8")
    return {_normal(p): v for p, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SANDBOX = tomllib.loads((ROOT / "sandbox" / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]


@pytest.mark.parametrize("name", LOCK_FILES)
def test_every_locked_package_is_pinned_with_hashes(name: str) -> None:
    text = (LOCK / f"{name}.txt").read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1].strip())
    requirements = [b for b in blocks if not b.startswith("#")]
    assert requirements
    for block in requirements:
        assert re.match(r"^[A-Za-z0-9_.\-]+==\S+ \\", block), block.splitlines()[0]
        assert "--hash=sha256:" in block, block.splitlines()[0]
    # Nothing of the machine that wrote it: no local paths, no index or wheel-directory options.
    for machine_specific in ("file://", "--index-url", "--extra-index-url", "--find-links"):
        assert machine_specific not in text


def test_lock_files_agree_on_every_version() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for name in LOCK_FILES:
        for package, version in pins(name).items():
            first = seen.setdefault(package, (version, name))
            assert first[0] == version, f"{package}: {first[1]} has {first[0]}, {name} {version}"


def test_the_service_lock_holds_the_runtime_dependencies_and_nothing_of_dev_or_bench() -> None:
    main = pins("main")
    missing = requirement_names(PROJECT["dependencies"]) - set(main)
    assert not missing, f"{sorted(missing)} not in requirements/main.txt: run make lock"
    dev_only = requirement_names(PROJECT["optional-dependencies"]["dev"]) - set(pins("main"))
    assert dev_only, "the dev extra has tools of its own"
    for name in ("pytest", "mypy", "ruff", "matplotlib", "psutil", "sortedcontainers"):
        assert name not in main, name


def test_bench_libraries_only_in_the_bench_lock() -> None:
    bench = requirement_names(PROJECT["optional-dependencies"]["bench"])
    assert bench == {"matplotlib", "psutil"}
    assert not bench & requirement_names(PROJECT["optional-dependencies"]["dev"])
    assert bench <= set(pins("bench"))
    for name in ("main", "dev", "demo"):
        assert not bench & set(pins(name)), name


def test_demo_lock_is_the_service_and_the_sandbox_only() -> None:
    demo = set(pins("demo"))
    assert set(pins("main")) <= demo
    assert requirement_names(SANDBOX["dependencies"]) <= demo
    assert demo - set(pins("main")) <= {"sortedcontainers"}
    assert "pytest" not in demo


def test_dev_lock_covers_the_sandbox_and_the_dev_extra() -> None:
    dev = set(pins("dev"))
    assert requirement_names(PROJECT["optional-dependencies"]["dev"]) <= dev
    assert requirement_names(SANDBOX["dependencies"]) <= dev


def test_the_service_wheel_carries_no_sandbox_and_no_tests(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("basketball_api-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}

    assert tops == {"basketball_api", f"basketball_api-{PROJECT['version']}.dist-info"}
    assert not any("stripe_sandbox" in n or n.startswith("tests/") for n in names)
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    assert "basketball_api/migrations/env.py" in names
    assert any(n.startswith("basketball_api/templates/") for n in names)


def test_image_context_is_only_what_the_image_is_built_from() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"  # everything out, then the few files back in
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "requirements/main.txt",
        "requirements/build.txt",
        "src",
    }
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(line.split()[1:-1])
    assert copied == allowed


def test_image_installs_from_the_lock_with_hashes() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")

    assert "--require-hashes --no-deps -r requirements/main.txt" in dockerfile
    assert "--require-hashes --no-deps -r requirements/build.txt" in dockerfile
