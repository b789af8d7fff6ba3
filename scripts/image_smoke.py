"""Run the built image as the Deployment runs it, and check what a cluster would rely on.

    python -m scripts.image_smoke localhost/basketball-api:ci

The container gets what the pod spec gives it: a read-only root filesystem with a writable
/tmp only, uid/gid 10001, no capabilities, no privilege escalation, production settings. It
migrates an empty PostgreSQL database (``basketball-api migrate``, as the init container),
then serves against the local Stripe sandbox; the checks are that /health, /health/ready and
/metrics answer, that the refresher completes a cycle, that every log line is JSON, that the
process really is uid 10001 with no capabilities and cannot write outside /tmp, and that
SIGTERM stops it cleanly (exit 0, before the grace period). The image itself must hold the
lock file's packages at the lock file's versions and no Stripe sandbox.

Containers are started with podman (runc). Where this machine's container runtime cannot
start containers, the same checks run on the image's root filesystem (``podman image
mount``) under the same constraints: a private mount namespace with the root bind-mounted
read-only and a tmpfs on /tmp, chroot, then setpriv to uid 10001 with an empty capability
bounding set and no_new_privs. ``IMAGE_RUNNER=rootfs`` forces that path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
UID = 10001
GRACE_SECONDS = 30  # terminationGracePeriodSeconds in deploy/kubernetes/deployment.yaml
WEBHOOK_SECRET = "whsec_image_smoke_" + "0" * 24
# What the container may touch on the host: its own tmpfs and nothing else.
PODMAN = ["podman", "--runtime", "runc"]
# This machine refuses to raise resource limits (no CAP_SYS_RESOURCE), and podman's defaults
# ask for more than the hard limits; lowering them is allowed.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def say(message: str) -> None:
    print(f"image-smoke: {message}", file=sys.stderr, flush=True)


class SmokeFailure(AssertionError):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)
    say(f"ok   {message}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(command: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kw)


# --- the image as files -----------------------------------------------------------------------


@contextmanager
def mounted(image: str) -> Iterator[Path]:
    done = run(["podman", "image", "mount", image])
    if done.returncode != 0:
        raise SmokeFailure(f"podman image mount failed: {done.stderr.strip()}")
    try:
        yield Path(done.stdout.strip())
    finally:
        run(["podman", "image", "unmount", image])


def locked_versions() -> dict[str, str]:
    pins = re.findall(
        r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", (REPO / "requirements" / "main.txt").read_text(), re.M
    )
    return {_normal(name): version for name, version in pins}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions(root: Path) -> dict[str, str]:
    out = {}
    for metadata in root.glob("opt/basketball-api/lib/python3*/site-packages/*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1)
            for line in metadata.read_text(errors="replace").splitlines()[:10]
            if ": " in line
        )
        out[_normal(fields["Name"])] = fields["Version"]
    return out


def check_image_files(image: str) -> None:
    config = json.loads(run(["podman", "image", "inspect", image]).stdout)[0]["Config"]
    check(config.get("User") == f"{UID}:{UID}", f"image user is {UID}:{UID} ({config.get('User')})")
    check("Healthcheck" not in config, "no HEALTHCHECK (the kubelet probes)")
    with mounted(image) as root:
        site = list(root.glob("opt/basketball-api/lib/python3*/site-packages"))
        check(len(site) == 1, "one virtual environment at /opt/basketball-api")
        sandbox = [str(p) for p in root.glob("opt/**/stripe_sandbox*")]
        check(not sandbox, f"no Stripe sandbox in the image {sandbox}")
        check(not list(site[0].glob("pip")), "no pip in the service's environment")
        check(
            not (root / "build").exists() and not (root / "opt/build-tools").exists(),
            "no build stage leftovers",
        )
        installed = installed_versions(root)
        own = installed.pop("basketball-api", None)
        check(own is not None, f"basketball-api {own} installed as a wheel")
        locked = locked_versions()
        check(
            installed == locked,
            f"{len(installed)} packages, exactly the lock file's versions"
            + ("" if installed == locked else f": differ {_diff(installed, locked)}"),
        )
        world_writable = run(
            ["find", str(root / "opt"), "-perm", "-o+w", "-not", "-type", "l"]
        ).stdout
        check(not world_writable.strip(), "nothing world-writable under /opt")


def _diff(a: dict[str, str], b: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


# --- around the container -----------------------------------------------------------------------


def empty_database() -> Any:
    """An empty PostgreSQL database on this machine's server, dropped afterwards."""
    from tests.procs import temporary_postgres

    return temporary_postgres("basketball_image", migrate=False)


@contextmanager
def stripe_sandbox(webhook_url: str) -> Iterator[str]:
    """The local Stripe (a dev tool, outside the image), on the host's loopback."""
    port = free_port()
    executable = shutil.which("stripe-sandbox", path=str(Path(sys.executable).parent))
    if executable is None:
        raise SmokeFailure("the stripe-sandbox command is missing (make install)")
    proc = subprocess.Popen(
        [
            executable,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webhook-url",
            webhook_url,
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/v1/checkout/sessions", timeout=1).status_code < 500,
            "the sandbox",
            30,
        )
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()


def wait_for(probe: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SmokeFailure(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.25)


def settings_env(database_url: str, stripe_url: str, port: int) -> dict[str, str]:
    """The Deployment's environment, with this machine's database and sandbox."""
    return {
        "ENVIRONMENT": "production",
        "LOG_FORMAT": "json",
        "DATABASE_URL": database_url,
        "STRIPE_API_KEY": "sk_test_image_smoke",
        "STRIPE_API_BASE": stripe_url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ADMIN_TOKEN": "image-smoke-admin-token-0123456789",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "REFRESH_INTERVAL_SECONDS": "2",
    }


# --- two ways to run it ---------------------------------------------------------------------------


class Runner:
    """Starts the image's command under the Deployment's constraints."""

    name = "?"

    def run_once(self, env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def start(self, env: dict[str, str], argv: list[str]) -> None:
        raise NotImplementedError

    def exec(self, code: str) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def terminate(self) -> tuple[int | None, float]:
        """SIGTERM, as the kubelet sends it; the exit code and the seconds it took."""
        raise NotImplementedError

    def logs(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Podman(Runner):
    name = "podman (runc)"

    def __init__(self, image: str) -> None:
        self.image = image
        self.container = f"basketball-api-smoke-{uuid.uuid4().hex[:8]}"

    def _args(self, env: dict[str, str]) -> list[str]:
        args = [
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs",
            "/tmp:rw,size=64m,mode=1777",
            "--user",
            f"{UID}:{UID}",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--network",
            "host",
            *ULIMITS,
        ]
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        return args

    def usable(self) -> bool:
        done = run([*PODMAN, "run", "--rm", *self._args({}), self.image, "true"])
        if done.returncode != 0:
            say(f"podman cannot start containers here: {done.stderr.strip()}")
        return done.returncode == 0

    def run_once(self, env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run([*PODMAN, "run", "--rm", *self._args(env), self.image, *argv], timeout=300)

    def start(self, env: dict[str, str], argv: list[str]) -> None:
        done = run(
            [
                *PODMAN,
                "run",
                "--detach",
                "--name",
                self.container,
                *self._args(env),
                self.image,
                *argv,
            ]
        )
        if done.returncode != 0:
            raise SmokeFailure(f"podman run failed: {done.stderr.strip()}")

    def exec(self, code: str) -> subprocess.CompletedProcess[str]:
        return run([*PODMAN, "exec", self.container, "python3", "-c", code])

    def terminate(self) -> tuple[int | None, float]:
        started = time.monotonic()
        run([*PODMAN, "kill", "--signal", "TERM", self.container])
        waited = run([*PODMAN, "wait", self.container], timeout=GRACE_SECONDS + 30)
        took = time.monotonic() - started
        code = int(waited.stdout.strip()) if waited.stdout.strip().lstrip("-").isdigit() else None
        return code, took

    def logs(self) -> str:
        done = run([*PODMAN, "logs", self.container])
        return done.stdout + done.stderr

    def close(self) -> None:
        run([*PODMAN, "rm", "--force", self.container])


class RootFs(Runner):
    """The image's root filesystem, run without a container runtime."""

    name = "root filesystem (unshare + chroot + setpriv)"

    def __init__(self, image: str) -> None:
        self._mount = mounted(image)
        self.root = self._mount.__enter__()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="basketball-api-smoke-", suffix=".log")[1])

    def _command(self, argv: list[str]) -> list[str]:
        # In a private mount namespace: the root bind-mounted read-only, a fresh tmpfs on /tmp
        # and proc; then chroot, and setpriv (from the image) drops to uid 10001 with no
        # capabilities at all and no way to gain any.
        script = (
            'set -e; R=$(mktemp -d); mount --bind "$0" "$R"; mount -o remount,bind,ro "$R"; '
            'mount -t tmpfs -o size=64m,mode=1777 tmpfs "$R/tmp"; mount -t proc proc "$R/proc"; '
            f'exec chroot "$R" /usr/bin/setpriv --reuid={UID} --regid={UID} --clear-groups '
            '--inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs -- "$@"'
        )
        return [
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            script,
            str(self.root),
            "/usr/bin/env",
            "-i",
            *argv,
        ]

    def _argv(self, env: dict[str, str], argv: list[str]) -> list[str]:
        image_env = {
            "PATH": "/opt/basketball-api/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        return [*(f"{k}={v}" for k, v in {**image_env, **env}.items()), *argv]

    def run_once(self, env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run(self._command(self._argv(env, argv)), timeout=300, cwd="/")

    def start(self, env: dict[str, str], argv: list[str]) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self._command(self._argv(env, argv)), stdout=log, stderr=subprocess.STDOUT, cwd="/"
        )

    def _server_pid(self) -> int:
        assert self.proc is not None
        # unshare --fork's child is sh exec'd into chroot, setpriv, env, then the server.
        found = run(["pgrep", "-P", str(self.proc.pid)]).stdout.split()
        return int(found[0]) if found else self.proc.pid

    def exec(self, code: str) -> subprocess.CompletedProcess[str]:
        pid = self._server_pid()
        return run(
            [
                "nsenter",
                "-t",
                str(pid),
                "-m",
                "-p",
                "-r",
                "-w",
                "-S",
                str(UID),
                "-G",
                str(UID),
                "/usr/bin/setpriv",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "/usr/bin/python3",
                "-c",
                code,
            ]
        )

    def terminate(self) -> tuple[int | None, float]:
        assert self.proc is not None
        started = time.monotonic()
        os.kill(self._server_pid(), signal.SIGTERM)
        try:
            code = self.proc.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        return code, time.monotonic() - started

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._mount.__exit__(None, None, None)
        self.log_path.unlink(missing_ok=True)


PROBE = r"""
import os, json
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        os.unlink(os.path.join(path, ".probe"))
        return True
    except OSError as e:
        return e.strerror
server = dict(
    line.split(":\t", 1) for line in open("/proc/1/status").read().splitlines() if ":\t" in line
)
print(json.dumps({
    "server_cmdline": open("/proc/1/cmdline").read().replace("\0", " ").strip(),
    "server_uid": server["Uid"].split(), "server_cap_eff": server["CapEff"].strip(),
    "server_cap_bnd": server["CapBnd"].strip(),
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "cap_eff": status["CapEff"].strip(), "cap_prm": status["CapPrm"].strip(),
    "cap_bnd": status["CapBnd"].strip(), "no_new_privs": status.get("NoNewPrivs", "?").strip(),
    "root": writable("/"), "opt": writable("/opt/basketball-api"), "tmp": writable("/tmp"),
}))
"""


def smoke(image: str) -> None:
    check_image_files(image)
    podman = Podman(image)
    runner: Runner = podman
    if os.environ.get("IMAGE_RUNNER") == "rootfs" or not podman.usable():
        say("running the image's root filesystem instead of a container")
        runner = RootFs(image)
    say(f"runner: {runner.name}")
    port = free_port()
    try:
        with (
            empty_database() as database_url,
            stripe_sandbox(f"http://127.0.0.1:{port}/webhooks/stripe") as stripe_url,
        ):
            env = settings_env(database_url, stripe_url, port)
            migrated = runner.run_once(
                {"LOG_FORMAT": "json", "DATABASE_URL": database_url}, ["basketball-api", "migrate"]
            )
            output = "" if migrated.returncode == 0 else migrated.stdout + migrated.stderr
            check(migrated.returncode == 0, f"migrate on an empty database exits 0 {output}")
            check_json_lines(migrated.stdout + migrated.stderr, "migrate")
            version = runner.run_once({}, ["basketball-api", "--version"])
            check(
                version.stdout.startswith("basketball-api "), f"--version: {version.stdout.strip()}"
            )

            runner.start(
                env, ["basketball-api", "serve", "--host", "127.0.0.1", "--port", str(port)]
            )
            base = f"http://127.0.0.1:{port}"
            wait_for(
                lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, "/health", 60
            )
            check(True, "/health answers 200")
            ready = httpx.get(f"{base}/health/ready", timeout=5)
            check(ready.status_code == 200, f"/health/ready answers 200 ({ready.text})")
            wait_for(
                lambda: (
                    "basketball_api_pending_orders_refresh_last_success_timestamp_seconds "
                    in httpx.get(f"{base}/metrics", timeout=2).text
                ),
                "a successful refresh",
                60,
            )
            metrics = httpx.get(f"{base}/metrics", timeout=5)
            check(
                metrics.status_code == 200 and "basketball_api_up 1.0" in metrics.text,
                "/metrics answers with basketball_api_up 1 and a successful refresh",
            )
            docs = httpx.get(f"{base}/docs", timeout=5)
            check(docs.status_code == 200, "/docs answers 200")
            products = httpx.get(f"{base}/products", timeout=5)
            check(products.status_code == 200, "/products answers 200")

            probe = runner.exec(PROBE)
            check(probe.returncode == 0, f"a process runs beside the server {probe.stderr.strip()}")
            facts = json.loads(probe.stdout)
            check((facts["uid"], facts["gid"]) == (UID, UID), f"runs as uid/gid {UID} ({facts})")
            check(
                int(facts["cap_eff"], 16) == 0 and int(facts["cap_prm"], 16) == 0,
                f"no capabilities (CapEff {facts['cap_eff']}, CapPrm {facts['cap_prm']})",
            )
            check(facts["no_new_privs"] == "1", "no_new_privs set")
            check(
                "basketball-api serve" in facts["server_cmdline"]
                and set(facts["server_uid"]) == {str(UID)}
                and int(facts["server_cap_eff"], 16) == 0
                and int(facts["server_cap_bnd"], 16) == 0,
                "the server itself (pid 1) runs as uid 10001 with no capabilities "
                f"({facts['server_cmdline']}: uid {facts['server_uid']}, "
                f"CapEff {facts['server_cap_eff']}, CapBnd {facts['server_cap_bnd']})",
            )
            check(
                facts["root"] is not True and facts["opt"] is not True,
                f"the root filesystem is read-only (/: {facts['root']}, /opt: {facts['opt']})",
            )
            check(facts["tmp"] is True, "/tmp is writable")

            code, took = runner.terminate()
            logs = runner.logs()
            check(
                code == 0, f"SIGTERM: exit code {code} after {took:.1f} s (grace {GRACE_SECONDS} s)"
            )
            check(took < GRACE_SECONDS, f"stopped within the grace period ({took:.1f} s)")
            events = check_json_lines(logs, "serve")
            names = [e.get("event", "") for e in events]
            check(
                any("Application shutdown complete" in n for n in names),
                "uvicorn shut down cleanly (lifespan ran)",
            )
            check("refresh_succeeded" in names, "the refresher completed a cycle")
    finally:
        runner.close()


def check_json_lines(text: str, what: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    bad = []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            bad.append(line)
    check(lines and not bad, f"{what}: all {len(lines)} log lines are JSON {bad[:3]}")
    return events


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        smoke(argv[0])
    except SmokeFailure as e:
        say(f"FAIL {e}")
        return 1
    say("image runs as the Deployment runs it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
