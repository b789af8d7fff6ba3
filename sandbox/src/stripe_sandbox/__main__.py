"""``python -m stripe_sandbox [--host H] [--port P] [--webhook-url URL] [--webhook-secret S]``"""

from __future__ import annotations

import argparse

from .config import SandboxConfig
from .server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve a sandbox until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m stripe_sandbox",
        description="A local, stateful Stripe for Checkout Sessions (test mode only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=None)
    parser.add_argument("--api-key", default=None, help="accept only this sk_test_ key")
    parser.add_argument("--public-url", default=None, help="base URL of the hosted pages")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s per endpoint")
    parser.add_argument(
        "--purged-event-cursor",
        choices=("error", "empty"),
        default="error",
        help="answer to an events cursor purged after 30 days: a 400 or an empty page",
    )
    args = parser.parse_args(argv)
    serve(
        args.host,
        args.port,
        SandboxConfig(
            api_key=args.api_key,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            public_url=args.public_url,
            latency_seconds=args.latency,
            rate_limit_per_second=args.rate_limit,
            purged_event_cursor=args.purged_event_cursor,
        ),
    )


if __name__ == "__main__":
    main()
