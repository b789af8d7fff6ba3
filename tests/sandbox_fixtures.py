"""Fixtures shared by the sandbox's own tests: one sandbox per module, reset before each test,
and an SDK client pointed at it. Import the ones a module uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from stripe_sandbox.app import create_app
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

KEY = "sk_test_sandbox_tests"


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app()) as srv:
        yield srv


@pytest.fixture
def control(server: BackgroundServer) -> Iterator[SandboxControl]:
    with SandboxControl(server.url) as ctl:
        ctl.reset()
        yield ctl


@pytest.fixture
def client(server: BackgroundServer, control: SandboxControl) -> Iterator[stripe.StripeClient]:
    http = stripe.HTTPXClient(allow_sync_methods=True, timeout=10)
    yield stripe.StripeClient(
        KEY, base_addresses={"api": server.url}, http_client=http, max_network_retries=0
    )
    http.close()  # type: ignore[no-untyped-call]
