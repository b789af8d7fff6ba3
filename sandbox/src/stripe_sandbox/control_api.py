"""The ``/_sandbox/`` control routes that tests, demos and benchmarks use to steer
the sandbox: clock, webhooks, faults, traffic, seeding and ground truth. JSON in
and out; never counted as Stripe calls. :mod:`stripe_sandbox.control` is the
Python client of these routes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import StripeError
from .events import PURGED_CURSOR_MODES
from .state import RequestInfo, Sandbox

Body = dict[str, Any]
ControlHandler = Callable[[Sandbox, Body, Request], Awaitable[Any]]


class ControlError(Exception):
    """A bad control request (answered 400 with ``{"error": message}``)."""


def _number(body: Body, name: str, default: float | None = None) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{name} must be a number")
    return float(value)


def _count(body: Body, name: str = "count") -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlError(f"{name} must be a non-negative integer")
    return value


def _optional_str(body: Body, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ControlError(f"{name} must be a string or null")
    return value


# -- handlers ------------------------------------------------------------------------------


async def status(sandbox: Sandbox, body: Body, request: Request) -> Any:
    return sandbox.describe()


async def reset(sandbox: Sandbox, body: Body, request: Request) -> Any:
    sandbox.reset()
    return {"reset": True}


async def settings(sandbox: Sandbox, body: Body, request: Request) -> Any:
    if "api_key" in body:
        sandbox.api_key = _optional_str(body, "api_key")
    if "public_url" in body:
        sandbox.public_url = _optional_str(body, "public_url")
    if "purged_event_cursor" in body:
        mode = body["purged_event_cursor"]
        if mode not in PURGED_CURSOR_MODES:
            raise ControlError(
                "purged_event_cursor must be one of " + ", ".join(PURGED_CURSOR_MODES)
            )
        sandbox.events.purged_cursor = mode
    return {
        "api_key_set": sandbox.api_key is not None,
        "public_url": sandbox.public_url,
        "purged_event_cursor": sandbox.events.purged_cursor,
    }


async def clock(sandbox: Sandbox, body: Body, request: Request) -> Any:
    return {"now": sandbox.clock.now(), "offset": sandbox.clock.offset}


async def advance_clock(sandbox: Sandbox, body: Body, request: Request) -> Any:
    seconds = _number(body, "seconds")
    if seconds < 0:
        raise ControlError("seconds must be >= 0: the clock only moves forward")
    now, expired = sandbox.advance_clock(seconds)
    return {"now": now, "offset": sandbox.clock.offset, "expired": expired}


async def late_events(sandbox: Sandbox, body: Body, request: Request) -> Any:
    seconds = _number(body, "seconds")
    try:
        sandbox.delay_next_events(_count(body), seconds)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return {"count": body["count"], "seconds": seconds}


async def webhook_status(sandbox: Sandbox, body: Body, request: Request) -> Any:
    return sandbox.webhooks.status()


async def configure_webhook(sandbox: Sandbox, body: Body, request: Request) -> Any:
    base = body.get("retry_base_seconds")
    attempts = body.get("max_attempts")
    sandbox.webhooks.configure(
        _optional_str(body, "url"),
        _optional_str(body, "secret"),
        None if base is None else _number(body, "retry_base_seconds"),
        None if attempts is None else _count(body, "max_attempts"),
    )
    return sandbox.webhooks.status()


async def drop_webhooks(sandbox: Sandbox, body: Body, request: Request) -> Any:
    sandbox.webhooks.drop(_count(body), bool(body.get("mark_delivered", True)))
    return sandbox.webhooks.status()


async def duplicate_webhooks(sandbox: Sandbox, body: Body, request: Request) -> Any:
    sandbox.webhooks.duplicate(_count(body))
    return sandbox.webhooks.status()


async def reorder_webhooks(sandbox: Sandbox, body: Body, request: Request) -> Any:
    sandbox.webhooks.reorder(_count(body))
    return sandbox.webhooks.status()


async def flush_webhooks(sandbox: Sandbox, body: Body, request: Request) -> Any:
    released = sandbox.webhooks.flush()
    return {"released": released, **sandbox.webhooks.status()}


async def wait_webhooks(sandbox: Sandbox, body: Body, request: Request) -> Any:
    idle = await sandbox.webhooks.wait_idle(_number(body, "timeout", 10.0))
    return {"idle": idle, **sandbox.webhooks.status()}


async def deliveries(sandbox: Sandbox, body: Body, request: Request) -> Any:
    event_id = request.query_params.get("event_id")
    data = [
        a.to_dict() for a in sandbox.webhooks.attempts if event_id is None or a.event_id == event_id
    ]
    return {"data": data}


async def list_faults(sandbox: Sandbox, body: Body, request: Request) -> Any:
    return {"data": [rule.to_dict() for rule in sandbox.traffic.rules]}


async def add_fault(sandbox: Sandbox, body: Body, request: Request) -> Any:
    count = body.get("count")
    rate = body.get("rate")
    seconds = body.get("seconds")
    retry = body.get("should_retry")
    try:
        rule = sandbox.traffic.add(
            endpoint=str(body.get("endpoint", "*")),
            kind=str(body.get("kind", "")),
            count=None if count is None else _count(body),
            rate=None if rate is None else _number(body, "rate"),
            seconds=None if seconds is None else _number(body, "seconds"),
            reason=_optional_str(body, "reason"),
            should_retry=None if retry is None else bool(retry),
        )
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return rule.to_dict()


async def clear_faults(sandbox: Sandbox, body: Body, request: Request) -> Any:
    sandbox.traffic.clear()
    return {"data": []}


async def set_latency(sandbox: Sandbox, body: Body, request: Request) -> Any:
    seconds = _number(body, "seconds")
    if seconds < 0:
        raise ControlError("seconds must be >= 0")
    sandbox.traffic.latency_seconds = seconds
    return {"latency_seconds": seconds}


async def set_rate_limit(sandbox: Sandbox, body: Body, request: Request) -> Any:
    per_second = body.get("per_second")
    try:
        sandbox.traffic.set_rate_limit(None if per_second is None else _number(body, "per_second"))
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return {"per_second": per_second}


async def request_counts(sandbox: Sandbox, body: Body, request: Request) -> Any:
    counts = dict(sandbox.traffic.counts)
    return {"counts": counts, "total": sum(counts.values())}


async def reset_request_counts(sandbox: Sandbox, body: Body, request: Request) -> Any:
    sandbox.traffic.reset_counts()
    return {"counts": {}, "total": 0}


async def seed(sandbox: Sandbox, body: Body, request: Request) -> Any:
    statuses = body.get("statuses", body.get("status"))
    if isinstance(statuses, str):
        statuses = [statuses]
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ControlError("metadata must be an object of strings")
    try:
        records = sandbox.seed(
            count=_count(body),
            created_spread_seconds=_number(body, "created_spread_seconds", 0.0),
            expires_in_seconds=int(_number(body, "expires_in_seconds", 24 * 3600)),
            metadata=metadata,
            statuses=statuses,
            amount=int(_number(body, "amount", 2500)),
            currency=str(body.get("currency", "eur")),
            product_name=str(body.get("product_name", "Season membership")),
            page_base=sandbox.page_base(str(request.base_url)),
        )
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return [
        {"id": r.id, "created": r.created, "expires_at": r.expires_at, "status": r.status}
        for r in records
    ]


async def sessions(sandbox: Sandbox, body: Body, request: Request) -> Any:
    wanted = request.query_params.get("status")
    table = sandbox.sessions.statuses()
    if wanted:
        table = {k: v for k, v in table.items() if v["status"] == wanted}
    return table


async def session(sandbox: Sandbox, body: Body, request: Request) -> Any:
    return sandbox.sessions.require(request.path_params["id"]).to_dict(True)


async def pay(sandbox: Sandbox, body: Body, request: Request) -> Any:
    record = sandbox.complete_session(
        request.path_params["id"],
        delayed=bool(body.get("delayed", False)),
        email=_optional_str(body, "email"),
    )
    return record.to_dict()


async def settle(sandbox: Sandbox, body: Body, request: Request) -> Any:
    if not isinstance(body.get("succeeded"), bool):
        raise ControlError("succeeded must be true or false")
    return sandbox.settle_async(request.path_params["id"], body["succeeded"]).to_dict()


async def expire(sandbox: Sandbox, body: Body, request: Request) -> Any:
    record = sandbox.expire_session(request.path_params["id"], RequestInfo())
    return record.to_dict()


# -- wiring --------------------------------------------------------------------------------


def _control_route(path: str, method: str, handler: ControlHandler) -> Route:
    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        body: Body = {}
        raw = await request.body()
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                return JSONResponse({"error": "the body must be JSON"}, status_code=400)
            if not isinstance(parsed, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
            body = parsed
        sandbox.sweep()
        try:
            result = await handler(sandbox, body, request)
        except ControlError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except StripeError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        return JSONResponse(result)

    return Route(path, endpoint, methods=[method])


def routes() -> list[Route]:
    """Every ``/_sandbox/`` route."""
    table: list[tuple[str, str, ControlHandler]] = [
        ("/_sandbox/status", "GET", status),
        ("/_sandbox/reset", "POST", reset),
        ("/_sandbox/settings", "POST", settings),
        ("/_sandbox/clock", "GET", clock),
        ("/_sandbox/clock/advance", "POST", advance_clock),
        ("/_sandbox/events/late", "POST", late_events),
        ("/_sandbox/webhooks", "GET", webhook_status),
        ("/_sandbox/webhooks", "POST", configure_webhook),
        ("/_sandbox/webhooks/drop", "POST", drop_webhooks),
        ("/_sandbox/webhooks/duplicate", "POST", duplicate_webhooks),
        ("/_sandbox/webhooks/reorder", "POST", reorder_webhooks),
        ("/_sandbox/webhooks/flush", "POST", flush_webhooks),
        ("/_sandbox/webhooks/wait", "POST", wait_webhooks),
        ("/_sandbox/webhooks/deliveries", "GET", deliveries),
        ("/_sandbox/faults", "GET", list_faults),
        ("/_sandbox/faults", "POST", add_fault),
        ("/_sandbox/faults", "DELETE", clear_faults),
        ("/_sandbox/latency", "POST", set_latency),
        ("/_sandbox/rate-limit", "POST", set_rate_limit),
        ("/_sandbox/requests", "GET", request_counts),
        ("/_sandbox/requests", "DELETE", reset_request_counts),
        ("/_sandbox/seed", "POST", seed),
        ("/_sandbox/sessions", "GET", sessions),
        ("/_sandbox/sessions/{id}", "GET", session),
        ("/_sandbox/sessions/{id}/pay", "POST", pay),
        ("/_sandbox/sessions/{id}/settle", "POST", settle),
        ("/_sandbox/sessions/{id}/expire", "POST", expire),
    ]
    return [_control_route(path, method, handler) for path, method, handler in table]
