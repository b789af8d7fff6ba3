"""The ``/v1/`` routes: Checkout Sessions and events, as the official SDK calls them.

Every request goes through the same steps before its handler runs: counted,
delayed by the added latency, given an injected fault if one fires, checked
against the rate limit, the API key and ``Stripe-Version``, expiry swept, and its
parameters checked against the grammar of the pinned API version. POSTs are
idempotent by ``Idempotency-Key`` as on Stripe.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import expansion, grammar, session_update
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
)
from .ids import new_id
from .paging import check_cursors
from .sessions import SessionRecord
from .state import RequestInfo, Sandbox

_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


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


def _render(record: SessionRecord, wanted: frozenset[str]) -> str:
    if not wanted:
        return record.to_json()
    items = None
    if any(path.split(".")[0] == "line_items" for path in wanted):
        paths = expansion.line_item_paths(wanted, "line_items.data.")
        items = [
            expansion.line_item(item.to_dict(), item.product(), paths) for item in record.line_items
        ]
    return json.dumps(expansion.session(record.to_dict(), wanted, items))


def _expand(call: Call) -> frozenset[str]:
    return expansion.requested(call.params, expansion.SESSION_PATHS)


def create_session(call: Call) -> str:
    wanted = _expand(call)
    record = call.sandbox.create_session(call.params, call.base_url)
    return _render(record, wanted)


def retrieve_session(call: Call) -> str:
    wanted = _expand(call)
    return _render(call.sandbox.sessions.require(call.path_params["id"]), wanted)


def update_session(call: Call) -> str:
    wanted = _expand(call)
    record = call.sandbox.sessions.require(call.path_params["id"])
    session_update.update(record, call.params, call.sandbox.clock.now_int())
    return _render(record, wanted)


def expire_session(call: Call) -> str:
    wanted = _expand(call)
    record = call.sandbox.expire_session(call.path_params["id"], call.info)
    return _render(record, wanted)


def session_line_items(call: Call) -> str:
    """Cursor paging over the session's items, in their order."""
    params = call.params
    wanted = expansion.requested(params, expansion.LINE_ITEM_PATHS, in_list=True)
    record = call.sandbox.sessions.require(call.path_params["id"])
    limit = parse_limit(params)
    after = get_str(params, "starting_after") or None
    before = get_str(params, "ending_before") or None
    check_cursors(after, before)
    ids = [item.id for item in record.line_items]
    for cursor, name in ((after, "starting_after"), (before, "ending_before")):
        if cursor is not None and cursor not in ids:
            raise invalid_request(f"No such line item: '{cursor}'", name, "resource_missing")
    items = list(record.line_items)
    if before is not None:
        end = ids.index(before)
        page, has_more = items[max(0, end - limit) : end], end > limit
    else:
        start = 0 if after is None else ids.index(after) + 1
        page, has_more = items[start : start + limit], start + limit < len(items)
    rendered = [
        json.dumps(expansion.line_item(item.to_dict(), item.product(), wanted)) for item in page
    ]
    return _list_json(rendered, has_more, f"/v1/checkout/sessions/{record.id}/line_items")


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
    wanted = expansion.requested(params, expansion.SESSION_PATHS, in_list=True)
    status = get_str(params, "status") or None
    records, has_more = call.sandbox.sessions.list(
        status=status,
        created=parse_created(params),
        limit=parse_limit(params),
        starting_after=get_str(params, "starting_after") or None,
        ending_before=get_str(params, "ending_before") or None,
        predicate=_session_filter(params),
    )
    return _list_json([_render(r, wanted) for r in records], has_more, "/v1/checkout/sessions")


def retrieve_event(call: Call) -> str:
    expansion.requested(call.params, frozenset())
    return call.sandbox.events.require(call.path_params["id"]).to_json()


def list_events(call: Call) -> str:
    params = call.params
    expansion.requested(params, frozenset(), in_list=True)
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
            version = _check_version(request.headers.get("stripe-version"), sandbox)
            sandbox.sweep()
            headers = {"Request-Id": request_id, "Stripe-Version": version}
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
            grammar.check(endpoint_name, params)
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


def _check_version(asked: str | None, sandbox: Sandbox) -> str:
    """The API version of a request: Stripe's error for one that does not exist; the
    sandbox answers only in the version it is held to."""
    pinned = sandbox.config.api_version
    if asked is None or asked == pinned:
        return pinned
    if not _VERSION.match(asked):
        raise invalid_request(f"Invalid Stripe API version: {asked}")
    raise invalid_request(
        f"The sandbox answers only in Stripe API version {pinned}; this request asked for {asked}."
    )


async def _unrecognized(request: Request) -> Response:
    return unrecognized_url(request.method, request.url.path).to_response(new_id("req", 14))


def routes() -> list[Route]:
    """The ``/v1/`` routes, with a Stripe-shaped 404 for any other ``/v1/`` URL."""
    return [
        stripe_route("POST", "/v1/checkout/sessions", create_session),
        stripe_route("GET", "/v1/checkout/sessions", list_sessions),
        stripe_route("GET", "/v1/checkout/sessions/{id}", retrieve_session),
        stripe_route("POST", "/v1/checkout/sessions/{id}", update_session),
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
