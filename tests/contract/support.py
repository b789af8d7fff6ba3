"""What the contract suite's tests share: the target (the sandbox or Stripe's test mode), a
polling helper for Stripe's eventually consistent lists, and the parameters the service sends."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar, Unpack

import pytest
import stripe
from stripe.params.checkout import SessionCreateParams

from stripe_sandbox.control import SandboxControl

KEY_ENV = "STRIPE_TEST_KEY"
TARGET_ENV = "CONTRACT_TARGET"
STRIPE_API = "https://api.stripe.com"
SANDBOX_KEY = "sk_test_contract_suite"
T = TypeVar("T")


def stripe_test_key() -> str | None:
    """The test-mode key to run against, or ``None`` for the sandbox; a live key is an error."""
    if os.environ.get(TARGET_ENV, "sandbox") != "stripe":
        return None
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise pytest.UsageError(f"{TARGET_ENV}=stripe needs a test-mode key in {KEY_ENV}")
    if key.startswith(("sk_live_", "rk_live_")):
        raise pytest.UsageError(f"{KEY_ENV} holds a live key: the contract suite never runs live")
    if not key.startswith(("sk_test_", "rk_test_")):
        raise pytest.UsageError(f"{KEY_ENV} must be a test-mode secret key (sk_test_...)")
    return key


@dataclass
class Target:
    """Where the contract calls go."""

    name: str  # "sandbox" or "stripe"
    api_base: str
    api_key: str
    control: SandboxControl | None  # the sandbox's control client; None on Stripe

    @contextlib.contextmanager
    def client(self) -> Iterator[stripe.StripeClient]:
        """A synchronous SDK client for this target, closed afterwards."""
        http = stripe.HTTPXClient(allow_sync_methods=True, timeout=30)
        try:
            yield stripe.StripeClient(
                self.api_key,
                base_addresses={"api": self.api_base},
                http_client=http,
                max_network_retries=2 if self.name == "stripe" else 0,
            )
        finally:
            http.close()  # type: ignore[no-untyped-call]

    def needs_sandbox(self, why: str) -> SandboxControl:
        """The control client; skip the test on Stripe, saying why."""
        if self.control is None:
            pytest.skip(f"only against the sandbox: {why}")
        return self.control


def eventually(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something: Stripe's lists are eventually consistent."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:.0f} s: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def session_params(order_id: str, **extra: Unpack[SessionCreateParams]) -> SessionCreateParams:
    """What the service sends when it creates a checkout link (see stripe_gateway)."""
    params: SessionCreateParams = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 4500,
                    "product_data": {"name": "Contract suite: tournament entry"},
                },
                "quantity": 1,
            }
        ],
        "client_reference_id": order_id,
        "metadata": {"order_id": order_id, "category": "tournament", "contract_suite": "1"},
        "customer_email": "parent@example.com",
        "success_url": "https://club.example/orders/paid?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://club.example/orders/cancelled",
        "after_expiration": {"recovery": {"enabled": True}},
    }
    params.update(extra)
    return params
