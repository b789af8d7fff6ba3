"""Structured logs (one event name per line, key=value context); configured by the CLI only."""

from __future__ import annotations

import logging
import re
import sys

import structlog

_CAPABILITY = re.compile(r"/(pay|o|orders/by-token)/[^/?\s]+")


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per line (message and newline together): the standard library's handlers
        # share the stream under another lock, and print() would let their lines in between.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # Access lines keep the path, never the query string: operators search orders by a
    # player's name or a parent's email (``/admin/orders?q=…``), which is personal data;
    # an order's access token in a path (``/pay/…``) is a capability: it is cut out too.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _WithoutQueryString) for f in access.filters):
        access.addFilter(_WithoutQueryString())
    # The SDK and the HTTP client log every request at INFO: our refresh line already counts them.
    for noisy in ("stripe", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class _WithoutQueryString(logging.Filter):
    """uvicorn's access record is ``(client, method, path with query, http version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = _CAPABILITY.sub(r"/\1/…", args[2].split("?", 1)[0])
            record.args = (args[0], args[1], path, args[3], args[4])
        return True
