"""Link facts only move forward: ``advance`` decides, ``fact_of`` reads a snapshot or event."""

from __future__ import annotations

import itertools

import pytest

from basketball_api.link_state import (
    ASYNC_FAILED,
    ASYNC_SUCCEEDED,
    CHECKOUT_EVENT_TYPES,
    Fact,
    advance,
    fact_of,
    is_terminal,
)
from basketball_api.models import LinkState, PaymentStatus
from basketball_api.stripe_gateway import SessionSnapshot

OPEN = Fact(LinkState.open, PaymentStatus.unpaid, 100)
EXPIRED = Fact(LinkState.expired, PaymentStatus.unpaid, 100)
PROCESSING = Fact(LinkState.complete, PaymentStatus.unpaid, 100)
PAID = Fact(LinkState.complete, PaymentStatus.paid, 100)
FAILED = Fact(LinkState.complete, PaymentStatus.failed, 100)
MISSING = Fact(LinkState.missing, None, 100)
ALL = [OPEN, EXPIRED, PROCESSING, PAID, FAILED, MISSING]


def snap(status: str, payment_status: str = "unpaid") -> SessionSnapshot:
    return SessionSnapshot("cs_1", status, payment_status, 0, 100)


def test_what_a_snapshot_or_its_event_says() -> None:
    assert fact_of(snap("open")) == OPEN
    assert fact_of(snap("expired")) == EXPIRED
    assert fact_of(snap("complete", "paid")) == PAID
    assert fact_of(snap("complete")) == PROCESSING
    # After a delayed payment failed Stripe still says complete/unpaid: the event type tells.
    assert fact_of(snap("complete"), ASYNC_FAILED) == FAILED
    assert fact_of(snap("complete"), ASYNC_SUCCEEDED) == PAID
    assert fact_of(snap("complete", "no_payment_required")).payment_status == (
        PaymentStatus.no_payment_required
    )


def test_one_definition_of_the_polled_types_within_stripes_limit() -> None:
    assert len(CHECKOUT_EVENT_TYPES) <= 20
    assert "checkout.session.expired" in CHECKOUT_EVENT_TYPES
    assert len(set(CHECKOUT_EVENT_TYPES)) == len(CHECKOUT_EVENT_TYPES)


@pytest.mark.parametrize("terminal", [EXPIRED, PAID, FAILED])
def test_nothing_replaces_a_terminal_fact(terminal: Fact) -> None:
    assert is_terminal(terminal)
    for new in ALL:
        assert advance(terminal, new) is None


def test_a_late_open_never_undoes_what_came_after_it() -> None:
    for old in [EXPIRED, PROCESSING, PAID, FAILED]:
        assert advance(old, OPEN) is None


def test_an_open_link_moves_to_anything_else() -> None:
    for new in [EXPIRED, PROCESSING, PAID, FAILED, MISSING]:
        assert advance(OPEN, new) == new
    assert advance(OPEN, OPEN) is None


def test_a_processing_payment_only_settles() -> None:
    assert advance(PROCESSING, PAID) == PAID
    assert advance(PROCESSING, FAILED) == FAILED
    assert advance(PROCESSING, MISSING) is None
    assert advance(PROCESSING, EXPIRED) is None


def test_missing_gives_way_to_anything_stripe_says_later() -> None:
    for new in [OPEN, EXPIRED, PROCESSING, PAID, FAILED]:
        assert advance(MISSING, new) == new
    assert advance(MISSING, MISSING) is None


def test_unknown_takes_anything_and_expires_at_is_kept_when_not_told() -> None:
    for new in ALL:
        assert advance(None, new) == new
    assert advance(OPEN, Fact(LinkState.expired)) == Fact(LinkState.expired, None, 100)


def test_any_order_of_the_same_facts_ends_in_the_same_place() -> None:
    """Whatever order webhooks, the feed and listings deliver a session's history in, the
    stored fact is the most advanced of them (here: a delayed payment that failed)."""
    history = [OPEN, PROCESSING, FAILED]
    for order in itertools.permutations(history):
        stored: Fact | None = None
        for fact in order:
            stored = advance(stored, fact) or stored
        assert stored == FAILED
