"""The ``/v1/`` routes: Checkout Sessions and events, as the official SDK calls them.

Every request goes through the same steps before its handler runs: counted,
delayed by the added latency, given an injected fault if one fires, checked
against the rate limit and the API key, and expiry swept. POSTs are idempotent
by ``Idempotency-Key`` as on Stripe.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import (
    StripeError,
    api_error,
    authentication,
    invalid_request,
    rate_limited,
    unrecognized_url,
)
from .events import EventRecord
from .faults import FaultRule
from .forms import (
    Params,
    as_list,
    get_dict,
    get_str,
    parse_bool,
    parse_created,
    parse_form,
    parse_limit,
    parse_query,
    reject_unknown,
)
from .ids import new_id
from .session_params import wants_line_items
from .sessions import STATUSES, SessionRecord
from .state import RequestInfo, Sandbox

SESSION_LIST_PARAMS = frozenset(
    {
        "created", "customer", "customer_account", "customer_details", "ending_before",
        "expand", "limit", "payment_intent", "payment_link", "starting_after", "status",
        "subscription",
    }
)  # fmt: skip
EVENT_LIST_PARAMS = frozenset(
    {"created", "delivery_success", "ending_before", "expand", "limit", "starting_after",
     "type", "types"}
)  # fmt: skip
RETRIEVE_PARAMS = frozenset({"expand"})


@dataclass(frozen=True, slots=True)
class Call:
    """One API call as a handler sees it."""

    sandbox: Sandbox
    params: Params
    path_params: dict[str, str]
    request_id: str
    idempotency_key: str | None
    base_url: str

    @property
    def info(self) -> RequestInfo:
        """For ``event.request``."""
        return RequestInfo(self.request_id, self.idempotency_key)


Handler = Callable[[Call], str]


def _list_json(items: list[str], has_more: bool, url: str) -> str:
    return (
        '{"object": "list", "data": ['
        + ", ".join(items)
        + f'], "has_more": {json.dumps(has_more)}, "url": "{url}"}}'
    )


# -- handlers ------------------------------------------------------------------------------


def create_session(call: Call) -> str:
    record = call.sandbox.create_session(call.params, call.base_url)
    return record.to_json(wants_line_items(call.params))


def retrieve_session(call: Call) -> str:
    reject_unknown(call.params, RETRIEVE_PARAMS)
    record = call.sandbox.sessions.require(call.path_params["id"])
    return record.to_json(wants_line_items(call.params))


def expire_session(call: Call) -> str:
    reject_unknown(call.params, RETRIEVE_PARAMS)
    record = call.sandbox.expire_session(call.path_params["id"], call.info)
    return record.to_json(wants_line_items(call.params))


def session_line_items(call: Call) -> str:
    reject_unknown(call.params, frozenset({"expand", "limit", "starting_after", "ending_before"}))
    record = call.sandbox.sessions.require(call.path_params["id"])
    limit = parse_limit(call.params)
    items = [json.dumps(item.to_dict()) for item in record.line_items]
    return _list_json(
        items[:limit], len(items) > limit, f"/v1/checkout/sessions/{record.id}/line_items"
    )


def _session_filter(params: Params) -> Callable[[SessionRecord], bool] | None:
    checks: list[Callable[[SessionRecord], bool]] = []
    details = get_dict(params, "customer_details")
    if details is not None:
        email = get_str(details, "email", "customer_details[email]")
        if email:
            checks.append(
                lambda r: r.customer_details is not None and r.customer_details["email"] == email
            )
    payment_intent = get_str(params, "payment_intent")
    if payment_intent:
        checks.append(lambda r: r.payment_intent == payment_intent)
    for unused in ("customer", "customer_account", "payment_link", "subscription"):
        if get_str(params, unused):  # the sandbox has none of these objects
            checks.append(lambda r: False)
    if not checks:
        return None
    return lambda r: all(check(r) for check in checks)


def list_sessions(call: Call) -> str:
    params = call.params
    reject_unknown(params, SESSION_LIST_PARAMS)
    status = get_str(params, "status") or None
    if status is not None and status not in STATUSES:
        raise invalid_request("Invalid status: must be one of open, complete, or expired", "status")
    records, has_more = call.sandbox.sessions.list(
        status=status,
        created=parse_created(params),
        limit=parse_limit(params),
        starting_after=get_str(params, "starting_after") or None,
        ending_before=get_str(params, "ending_before") or None,
        predicate=_session_filter(params),
    )
    return _list_json([r.to_json() for r in records], has_more, "/v1/checkout/sessions")


def retrieve_event(call: Call) -> str:
    reject_unknown(call.params, RETRIEVE_PARAMS)
    return call.sandbox.events.require(call.path_params["id"]).to_json()


def list_events(call: Call) -> str:
    params = call.params
    reject_unknown(params, EVENT_LIST_PARAMS)
    raw_types = params.get("types")
    types: list[str] | None = None
    if raw_types is not None and raw_types != "":
        types = []
        for value in as_list(raw_types, "types"):
            if not isinstance(value, str):
                raise invalid_request("Invalid array: types", "types")
            types.append(value)
    raw_success = params.get("delivery_success")
    events: list[EventRecord]
    events, has_more = call.sandbox.events.list(
        type_filter=get_str(params, "type") or None,
        types=types,
        created=parse_created(params),
        delivery_success=(
            None
            if raw_success is None or raw_success == ""
            else parse_bool(raw_success, "delivery_success")
        ),
        limit=parse_limit(params),
        starting_after=get_str(params, "starting_after") or None,
        ending_before=get_str(params, "ending_before") or None,
    )
    return _list_json([e.to_json() for e in events], has_more, "/v1/events")


# -- the request pipeline ------------------------------------------------------------------


def _json_response(body: str, status: int, headers: dict[str, str]) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _fault_response(rule: FaultRule, request_id: str) -> Response | None:
    """The answer an injected fault gives, or ``None`` to go on (``latency``)."""
    if rule.kind == "latency":
        await asyncio.sleep(rule.seconds)
        return None
    if rule.kind == "hang":
        await asyncio.sleep(rule.seconds)
        return api_error(504, rule.should_retry).to_response(request_id)
    if rule.kind == "server_error":
        return api_error(500, rule.should_retry).to_response(request_id)
    if rule.kind == "unavailable":
        return api_error(503, rule.should_retry).to_response(request_id)
    if rule.kind == "rate_limit":
        return rate_limited(rule.reason, rule.should_retry).to_response(request_id)
    if rule.kind == "unauthorized":
        return authentication("sk_test_rejected_by_fault").to_response(request_id)
    return Response(
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        status_code=200,
        media_type="text/html",
        headers={"Request-Id": request_id},
    )


def stripe_route(method: str, template: str, handler: Handler) -> Route:
    """A ``/v1/`` route whose requests go through the common pipeline."""
    endpoint_name = f"{method} {template}"

    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        traffic = sandbox.traffic
        request_id = new_id("req", 14)
        traffic.count(endpoint_name)
        # Read the body first: a request whose client gave up during a delay is
        # still processed, as on Stripe.
        try:
            body = await request.body() if method == "POST" else b""
        except ClientDisconnect:
            return Response(status_code=499)
        if traffic.latency_seconds > 0:
            await asyncio.sleep(traffic.latency_seconds)
        rule = traffic.pick(endpoint_name)
        if rule is not None:
            faulty = await _fault_response(rule, request_id)
            if faulty is not None:
                return faulty
        try:
            if not traffic.allow(endpoint_name):
                raise rate_limited("endpoint-rate")
            sandbox.check_api_key(request.headers.get("authorization"))
            sandbox.sweep()
            headers = {
                "Request-Id": request_id,
                "Stripe-Version": request.headers.get("stripe-version")
                or sandbox.config.api_version,
            }
            key = request.headers.get("idempotency-key") if method == "POST" else None
            params = parse_form(body) if method == "POST" else parse_query(request.url.query)
            fingerprint = ""
            if key:
                headers["Idempotency-Key"] = key
                fingerprint = sandbox.idempotency.fingerprint(f"{method} {request.url.path}", body)
                saved = sandbox.idempotency.lookup(key, fingerprint)
                if saved is not None:
                    headers["Idempotent-Replayed"] = "true"
                    return _json_response(saved.body, saved.status, headers)
            call = Call(
                sandbox=sandbox,
                params=params,
                path_params={k: str(v) for k, v in request.path_params.items()},
                request_id=request_id,
                idempotency_key=key,
                base_url=str(request.base_url),
            )
            answer = handler(call)
            if key:
                sandbox.idempotency.save(key, fingerprint, 200, answer)
            return _json_response(answer, 200, headers)
        except StripeError as exc:
            return exc.to_response(request_id)

    return Route(template, endpoint, methods=[method])


async def _unrecognized(request: Request) -> Response:
    return unrecognized_url(request.method, request.url.path).to_response(new_id("req", 14))


def routes() -> list[Route]:
    """The ``/v1/`` routes, with a Stripe-shaped 404 for any other ``/v1/`` URL."""
    return [
        stripe_route("POST", "/v1/checkout/sessions", create_session),
        stripe_route("GET", "/v1/checkout/sessions", list_sessions),
        stripe_route("GET", "/v1/checkout/sessions/{id}", retrieve_session),
        stripe_route("POST", "/v1/checkout/sessions/{id}/expire", expire_session),
        stripe_route("GET", "/v1/checkout/sessions/{id}/line_items", session_line_items),
        stripe_route("GET", "/v1/events", list_events),
        stripe_route("GET", "/v1/events/{id}", retrieve_event),
        Route(
            "/v1/{rest:path}",
            _unrecognized,
            methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
        ),
    ]
