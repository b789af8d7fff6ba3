"""Injected faults in the Stripe sandbox, each seen through the official SDK as the
exception a real Stripe failure of that kind produces."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
import stripe
from stripe.params.checkout import SessionCreateParams

from stripe_sandbox.app import create_app
from stripe_sandbox.control import SandboxControl, SandboxControlError
from stripe_sandbox.server import BackgroundServer

KEY = "sk_test_faults"
CREATE = "POST /v1/checkout/sessions"
LIST = "GET /v1/checkout/sessions"
RETRIEVE = "GET /v1/checkout/sessions/{id}"


PARAMS: SessionCreateParams = {
    "mode": "payment",
    "line_items": [
        {
            "price_data": {
                "currency": "eur",
                "unit_amount": 2000,
                "product_data": {"name": "Referee course"},
            },
            "quantity": 1,
        }
    ],
    "success_url": "https://club.example/paid",
}


def sdk(url: str, http: stripe.HTTPClient, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(
        KEY, base_addresses={"api": url}, http_client=http, max_network_retries=retries
    )


@pytest.fixture
def http() -> Iterator[stripe.HTTPXClient]:
    client = stripe.HTTPXClient(allow_sync_methods=True, timeout=10)
    yield client
    client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def client(
    server: BackgroundServer, control: SandboxControl, http: stripe.HTTPXClient
) -> stripe.StripeClient:
    return sdk(server.url, http)


@pytest.mark.parametrize(
    ("kind", "exception", "status"),
    [
        ("server_error", stripe.APIError, 500),
        ("unavailable", stripe.APIError, 503),
        ("malformed", stripe.APIError, 200),
        ("rate_limit", stripe.RateLimitError, 429),
        ("unauthorized", stripe.AuthenticationError, 401),
    ],
)
def test_fault_kinds_become_the_sdk_exceptions(
    client: stripe.StripeClient,
    control: SandboxControl,
    kind: str,
    exception: type[stripe.StripeError],
    status: int,
) -> None:
    control.inject_fault(LIST, kind)
    with pytest.raises(exception) as caught:
        client.v1.checkout.sessions.list()
    assert caught.value.http_status == status
    assert client.v1.checkout.sessions.list().data == []  # count=1 by default
    assert control.faults() == []


def test_error_bodies_are_stripe_shaped(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    control.inject_fault(LIST, "500", should_retry=False)
    with pytest.raises(stripe.APIError) as caught:
        client.v1.checkout.sessions.list()
    assert isinstance(caught.value.json_body, dict)
    assert caught.value.json_body["error"]["type"] == "api_error"
    assert caught.value.headers is not None
    assert caught.value.headers["Stripe-Should-Retry"] == "false"

    control.inject_fault(LIST, "malformed")
    with pytest.raises(stripe.APIError, match="Invalid response body from API"):
        client.v1.checkout.sessions.list()


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("global-concurrency", "rate_limit"),
        ("global-rate", "rate_limit"),
        ("endpoint-concurrency", "rate_limit"),
        ("endpoint-rate", "rate_limit"),
        ("resource-specific", "lock_timeout"),
    ],
)
def test_rate_limited_reasons(
    client: stripe.StripeClient, control: SandboxControl, reason: str, code: str
) -> None:
    control.inject_fault(CREATE, "rate_limit", reason=reason)
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.checkout.sessions.create(params=PARAMS)
    err = caught.value
    assert err.headers is not None
    assert err.headers["Stripe-Rate-Limited-Reason"] == reason
    assert isinstance(err.json_body, dict)
    assert err.json_body["error"]["code"] == code
    assert err.json_body["error"]["type"] == "invalid_request_error"
    assert control.sessions() == {}  # the request was not processed


def test_count_endpoint_and_wildcard(client: stripe.StripeClient, control: SandboxControl) -> None:
    session = client.v1.checkout.sessions.create(params=PARAMS)
    control.inject_fault(RETRIEVE, "503", count=2)
    assert client.v1.checkout.sessions.list().data[0].id == session.id  # other endpoint
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.checkout.sessions.retrieve(session.id)
    assert client.v1.checkout.sessions.retrieve(session.id).id == session.id

    control.inject_fault("*", "server_error", count=2)
    with pytest.raises(stripe.APIError):
        client.v1.events.list()
    with pytest.raises(stripe.APIError):
        client.v1.checkout.sessions.retrieve(session.id)
    client.v1.events.list()


def test_rate_probability(client: stripe.StripeClient, control: SandboxControl) -> None:
    control.inject_fault(LIST, "server_error", rate=1.0)
    for _ in range(3):
        with pytest.raises(stripe.APIError):
            client.v1.checkout.sessions.list()
    control.clear_faults()
    control.inject_fault(LIST, "server_error", rate=0.0)
    for _ in range(3):
        client.v1.checkout.sessions.list()
    control.clear_faults()
    control.inject_fault(LIST, "server_error", rate=1.0, count=1)
    with pytest.raises(stripe.APIError):
        client.v1.checkout.sessions.list()
    client.v1.checkout.sessions.list()


def test_bad_fault_requests_are_refused(control: SandboxControl) -> None:
    with pytest.raises(SandboxControlError):
        control.inject_fault(LIST, "explode")
    with pytest.raises(SandboxControlError):
        control.inject_fault(LIST, "hang")  # needs seconds
    with pytest.raises(SandboxControlError):
        control.inject_fault(LIST, "rate_limit", reason="too-fast")


def test_hang_past_the_client_timeout_is_a_connection_error(
    server: BackgroundServer, control: SandboxControl
) -> None:
    control.inject_fault(CREATE, "hang", seconds=1.5)
    short = stripe.HTTPXClient(allow_sync_methods=True, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(stripe.APIConnectionError):
            sdk(server.url, short).v1.checkout.sessions.create(params=PARAMS)
        assert time.monotonic() - started < 1.4
    finally:
        short.close()  # type: ignore[no-untyped-call]
    assert control.sessions() == {}  # a hung request is never processed


def test_latency_past_the_timeout_still_processes_the_request(
    server: BackgroundServer, control: SandboxControl
) -> None:
    control.inject_fault(CREATE, "latency", seconds=0.8)
    short = stripe.HTTPXClient(allow_sync_methods=True, timeout=0.3)
    try:
        with pytest.raises(stripe.APIConnectionError):
            sdk(server.url, short).v1.checkout.sessions.create(params=PARAMS)
    finally:
        short.close()  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + 5
    while not control.sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(control.sessions()) == 1  # created although the client gave up


def test_connection_refused_then_back_with_the_same_state() -> None:
    app = create_app()
    srv = BackgroundServer(app).start()
    http = stripe.HTTPXClient(allow_sync_methods=True, timeout=5)
    try:
        client = sdk(srv.url, http)
        session = client.v1.checkout.sessions.create(params=PARAMS)
        srv.stop()
        with pytest.raises(stripe.APIConnectionError):
            client.v1.checkout.sessions.retrieve(session.id)
        srv.start()  # same port, same app
        assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    finally:
        http.close()  # type: ignore[no-untyped-call]
        srv.stop()


def test_sdk_retries_follow_stripe_should_retry(
    server: BackgroundServer, control: SandboxControl, http: stripe.HTTPXClient
) -> None:
    patient = sdk(server.url, http, retries=2)
    control.inject_fault(LIST, "rate_limit", reason="resource-specific", should_retry=True)
    assert patient.v1.checkout.sessions.list().data == []
    assert control.request_counts()[LIST] == 2

    control.reset_request_counts()
    control.inject_fault(LIST, "server_error", should_retry=False)
    with pytest.raises(stripe.APIError):
        patient.v1.checkout.sessions.list()
    assert control.request_counts()[LIST] == 1

    control.reset_request_counts()
    control.inject_fault(LIST, "rate_limit")  # plain 429s are not retried by the SDK
    with pytest.raises(stripe.RateLimitError):
        patient.v1.checkout.sessions.list()
    assert control.request_counts()[LIST] == 1


def test_endpoint_rate_limit(client: stripe.StripeClient, control: SandboxControl) -> None:
    control.set_rate_limit(5)
    for _ in range(5):
        client.v1.checkout.sessions.list()
    for _ in range(3):
        with pytest.raises(stripe.RateLimitError) as caught:
            client.v1.checkout.sessions.list()
        assert caught.value.headers is not None
        assert caught.value.headers["Stripe-Rate-Limited-Reason"] == "endpoint-rate"
    client.v1.events.list()  # another endpoint has its own budget
    control.set_rate_limit(None)
    client.v1.checkout.sessions.list()


@pytest.mark.anyio
async def test_global_latency_overlaps_concurrent_requests(server: BackgroundServer) -> None:
    with SandboxControl(server.url) as control:
        control.reset()
        control.set_latency(0.3)
    http = stripe.HTTPXClient(timeout=10)
    client = sdk(server.url, http)
    try:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(client.v1.checkout.sessions.list_async)
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 1.2
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
        with SandboxControl(server.url) as control:
            control.set_latency(0)


def test_request_counts_per_endpoint(
    client: stripe.StripeClient, control: SandboxControl, server: BackgroundServer
) -> None:
    session = client.v1.checkout.sessions.create(params=PARAMS)
    client.v1.checkout.sessions.retrieve(session.id)
    client.v1.checkout.sessions.retrieve(session.id)
    client.v1.checkout.sessions.list()
    client.v1.events.list()
    control.pay(session.id)  # control calls are not counted
    with httpx.Client() as browser:  # nor is the hosted page
        browser.get(f"{server.url}/checkout/{session.id}")
    assert control.request_counts() == {
        CREATE: 1,
        RETRIEVE: 2,
        LIST: 1,
        "GET /v1/events": 1,
    }
    control.reset_request_counts()
    assert control.request_counts() == {}
