"""A Stripe sandbox in a process of its own, for the benchmarks.

``python -m bench.sandbox_process [--latency S] [--rate-limit R]`` binds a free loopback port,
prints the sandbox's URL on one line, and serves until its standard input closes. Running it
apart keeps the sandbox's JSON work off the measured process's interpreter lock.
"""

from __future__ import annotations

import argparse
import sys

from stripe_sandbox.app import create_app
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.server import BackgroundServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox_process")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=None)
    args = parser.parse_args(argv)
    config = SandboxConfig(latency_seconds=args.latency, rate_limit_per_second=args.rate_limit)
    with BackgroundServer(create_app(config)) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin (or exits)


if __name__ == "__main__":
    main()
