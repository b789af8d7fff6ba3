"""Structured logs (one event name per line, key=value context); configured by the CLI only.

Every line goes through one standard-library handler whose formatter is structlog's
``ProcessorFormatter``: the service's own structlog events and the lines of uvicorn, Alembic,
the Stripe SDK or any other library come out in the same format. With ``LOG_FORMAT=json``
each line is one JSON object, tracebacks included (as a structured ``exception`` field).
One handler also means one lock on the stream, so lines never interleave.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

import structlog
import structlog.tracebacks

# The SDK and the HTTP client log every request at INFO: our refresh line already counts them.
_NOISY = ("stripe", "httpx", "httpcore")

_CAPABILITY = re.compile(r"/(pay|o|orders/by-token)/[^/?\s]+")


def _shared_processors(fmt: str) -> list[structlog.types.Processor]:
    """What every line gets, whether it started in structlog or in the standard library."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
    ]
    if fmt == "json":
        # Tracebacks as data (a multi-line text traceback would break one object per line),
        # without the frames' local variables: they can hold personal data and secrets.
        processors.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    return processors


def _drop_color_message(
    _logger: object, _method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """uvicorn passes a copy of each message with terminal colour codes as ``extra``."""
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    level: str = "INFO", fmt: str = "console", stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library's loggers to one handler on ``stream``."""
    shared = _shared_processors(fmt)
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: rich's would print every frame's local variables (personal data,
        # secrets) and take seconds to render a large object.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level)
    root.setLevel(numeric)
    # uvicorn and Alembic log through their own named loggers; with ``log_config=None`` uvicorn
    # adds no handler of its own, so their lines reach the root handler above.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
        named.setLevel(numeric)
    # Access lines keep the path, never the query string: operators search orders by a
    # player's name or a parent's email (``/admin/orders?q=…``), which is personal data;
    # an order's access token in a path (``/pay/…``) is a capability: it is cut out too.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _WithoutQueryString) for f in access.filters):
        access.addFilter(_WithoutQueryString())
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric))


class _WithoutQueryString(logging.Filter):
    """uvicorn's access record is ``(client, method, path with query, http version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = _CAPABILITY.sub(r"/\1/…", args[2].split("?", 1)[0])
            record.args = (args[0], args[1], path, args[3], args[4])
        return True
