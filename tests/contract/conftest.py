"""The target of the contract suite: the local sandbox (default, in ``make test``), or Stripe's
test mode with ``CONTRACT_TARGET=stripe`` and an ``sk_test_`` key in ``STRIPE_TEST_KEY`` (what
``make contract STRIPE_TEST_KEY=sk_test_...`` sets). A live key is refused before any test runs;
a key lying in the environment is never used unless ``CONTRACT_TARGET=stripe`` asks for it.

Expectations are Stripe's documented behaviour. Where Stripe is only eventually consistent
(events appear in the list a little after the call that caused them) the tests poll, with a
deadline, on both targets alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import stripe
from tests.contract.support import SANDBOX_KEY, STRIPE_API, Target, stripe_test_key

from basketball_api import stripe_reader
from basketball_api.stripe_gateway import Connection, StripeGateway
from stripe_sandbox.app import create_app
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer


def pytest_configure(config: pytest.Config) -> None:
    stripe_test_key()  # refuse a live key before anything runs


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    key = stripe_test_key()
    if key is not None:
        yield Target("stripe", STRIPE_API, key, None)
        return
    # Like an account: only its own key is accepted.
    app = create_app(SandboxConfig(api_key=SANDBOX_KEY, webhook_retry_base_seconds=0.05))
    with BackgroundServer(app) as server, SandboxControl(server.url) as control:
        control.reset()
        yield Target("sandbox", server.url, SANDBOX_KEY, control)


@pytest.fixture
def client(target: Target) -> Iterator[stripe.StripeClient]:
    with target.client() as sdk:
        yield sdk


@pytest.fixture
async def gateway(target: Target) -> AsyncIterator[StripeGateway]:
    """The service's own wall over the SDK, as the service builds it (its reads made in the
    reader process)."""
    connection = Connection(
        target.api_key,
        target.api_base,
        timeout_seconds=30,
        max_network_retries=2 if target.name == "stripe" else 0,
        rate_limit_per_second=5.0,
    )
    gw = StripeGateway.connect(connection, reader=stripe_reader.shared())
    yield gw
    await gw.aclose()
