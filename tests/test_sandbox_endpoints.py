"""Endpoints of the sandbox as the pinned API version has them: line-item pagination, the
update endpoint, ``Stripe-Version`` and ``expand[]``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sandbox.control import SandboxControl


def items(count: int) -> list[dict[str, Any]]:
    return [
        {
            "price_data": {
                "currency": "eur",
                "unit_amount": 100 + i,
                "product_data": {"name": f"Jersey {i}"},
            },
            "quantity": 1,
        }
        for i in range(count)
    ]


def session(client: stripe.StripeClient, count: int = 1, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": items(count),
        "success_url": "https://club.example/paid",
        "metadata": {"order_id": "17", "team": "u12"},
    }
    params.update(extra)
    return client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]


def test_line_items_are_paged_with_cursors_and_auto_paging_ends(
    client: stripe.StripeClient,
) -> None:
    s = session(client, 15)
    names = [f"Jersey {i}" for i in range(15)]
    first = client.v1.checkout.sessions.line_items.list(s.id)
    assert [li.description for li in first.data] == names[:10]
    assert first.has_more is True
    second = client.v1.checkout.sessions.line_items.list(
        s.id, params={"starting_after": first.data[-1].id}
    )
    assert [li.description for li in second.data] == names[10:]
    assert second.has_more is False
    back = client.v1.checkout.sessions.line_items.list(
        s.id, params={"ending_before": second.data[0].id, "limit": 3}
    )
    assert [li.description for li in back.data] == names[7:10]
    assert back.has_more is True
    walked = [li.description for li in first.auto_paging_iter()]
    assert walked == names
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.line_items.list(s.id, params={"starting_after": "li_nope"})
    assert caught.value.param == "starting_after"


def test_update_changes_metadata_of_an_open_session(
    client: stripe.StripeClient, control: SandboxControl
) -> None:
    s = session(client)
    updated = client.v1.checkout.sessions.update(
        s.id, params={"metadata": {"team": "", "coach": "Dana"}}
    )
    assert updated.id == s.id
    assert updated.metadata is not None
    assert updated.metadata.to_dict() == {"order_id": "17", "coach": "Dana"}
    again = client.v1.checkout.sessions.retrieve(s.id).metadata
    assert again is not None
    assert again.to_dict() == updated.metadata.to_dict()
    cleared = client.v1.checkout.sessions.update(s.id, params={"metadata": ""})
    assert cleared.metadata is not None
    assert cleared.metadata.to_dict() == {}

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.update(s.id, params={"metdata": {"a": "b"}})  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.param) == ("parameter_unknown", "metdata")
    client.v1.checkout.sessions.expire(s.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.update(s.id, params={"metadata": {"a": "b"}})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.update("cs_test_nope", params={"metadata": {"a": "b"}})
    assert missing.value.http_status == 404


def test_update_line_items_resends_the_whole_list(client: stripe.StripeClient) -> None:
    s = session(client, 2, ui_mode="embedded_page", return_url="https://club.example/r",
                success_url=None)  # fmt: skip
    current = client.v1.checkout.sessions.line_items.list(s.id).data
    updated = client.v1.checkout.sessions.update(
        s.id,
        params={
            "line_items": [
                {"id": current[1].id, "quantity": 3},
                {"price_data": {"currency": "eur", "unit_amount": 700,
                                "product_data": {"name": "Socks"}}, "quantity": 1},
            ]
        },
    )  # fmt: skip
    assert updated.amount_total == 3 * 101 + 700
    after = client.v1.checkout.sessions.line_items.list(s.id).data
    assert [(li.description, li.quantity) for li in after] == [("Jersey 1", 3), ("Socks", 1)]
    hosted = session(client, 1)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.update(
            hosted.id, params={"line_items": [{"id": "li_x", "quantity": 2}]}
        )
    assert caught.value.param == "line_items"


def test_stripe_version_is_validated(client: stripe.StripeClient) -> None:
    s = session(client)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.retrieve(s.id, options={"stripe_version": "not-a-version"})
    assert "not-a-version" in str(caught.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.retrieve(s.id, options={"stripe_version": "2019-01-01"})
    ok = client.v1.checkout.sessions.retrieve(s.id, options={"stripe_version": "2026-10-28.endive"})
    assert ok.id == s.id


@pytest.mark.parametrize(
    ("call", "expand"),
    [
        ("retrieve", ["nope"]),
        ("retrieve", ["metadata"]),
        ("retrieve", ["line_items.data.price.product.default_price"]),
        ("list", ["line_items"]),
        ("list", ["data.nope"]),
        ("events", ["data.object"]),
        ("line_items", ["price"]),
    ],
)
def test_expand_of_unknown_or_unexpandable_fields_is_refused(
    client: stripe.StripeClient, call: str, expand: list[str]
) -> None:
    s = session(client)
    sessions = client.v1.checkout.sessions
    calls: dict[str, Callable[[], object]] = {
        "retrieve": lambda: sessions.retrieve(s.id, params={"expand": expand}),
        "list": lambda: sessions.list(params={"expand": expand}),
        "events": lambda: client.v1.events.list(params={"expand": expand}),
        "line_items": lambda: sessions.line_items.list(s.id, params={"expand": expand}),
    }
    with pytest.raises(stripe.InvalidRequestError) as caught:
        calls[call]()
    assert caught.value.http_status == 400
    assert str(caught.value.param).startswith("expand")


def test_expand_of_expandable_fields(client: stripe.StripeClient) -> None:
    s = session(client, 2)
    full = client.v1.checkout.sessions.retrieve(
        s.id, params={"expand": ["line_items.data.price.product", "customer"]}
    )
    assert full.customer is None
    assert full.line_items is not None
    product = full.line_items.data[0].price.product  # type: ignore[union-attr]
    assert isinstance(product, stripe.Product)
    assert product.name == "Jersey 0"
    listed = client.v1.checkout.sessions.list(params={"expand": ["data.line_items"], "limit": 1})
    assert listed.data[0].line_items is not None
    assert len(listed.data[0].line_items.data) == 2
    priced = client.v1.checkout.sessions.line_items.list(
        s.id, params={"expand": ["data.price.product"]}
    )
    assert isinstance(priced.data[0].price.product, stripe.Product)  # type: ignore[union-attr]
    plain = client.v1.checkout.sessions.retrieve(s.id)
    assert "line_items" not in plain.to_dict()  # includable only
