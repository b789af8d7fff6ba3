"""Create parameters in the sandbox as the pinned API version has them: unknown names refused
at any depth with their full path, every accepted parameter validated (types, enums,
currencies, minimum amounts, objects it names) and echoed on the session."""

from __future__ import annotations

from typing import Any, cast

import pytest
import stripe
from stripe.params.checkout import SessionCreateParams


def params(**changes: Any) -> SessionCreateParams:
    """Create parameters with ``changes`` (None leaves one out); the tests here send what the
    SDK's types allow and, on purpose, what they do not, so the result is only claimed to be
    SessionCreateParams."""
    base: dict[str, Any] = {
        "mode": "payment",
        "line_items": item(),
        "success_url": "https://club.example/paid?session_id={CHECKOUT_SESSION_ID}",
    }
    base.update(changes)
    return cast(SessionCreateParams, {k: v for k, v in base.items() if v is not None})


def item(**price_data: Any) -> list[dict[str, Any]]:
    data: dict[str, Any] = {
        "currency": "eur",
        "unit_amount": 4500,
        "product_data": {"name": "Summer camp"},
    }
    data.update(price_data)
    return [{"price_data": data, "quantity": 1}]


def refused(client: stripe.StripeClient, **changes: Any) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params=params(**changes))
    assert caught.value.http_status == 400
    return caught.value


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"line_items": item(product_data={"nmae": "Camp"})},
         "line_items[0][price_data][product_data][nmae]"),
        ({"line_items": item(unit_amont=4500)}, "line_items[0][price_data][unit_amont]"),
        ({"line_items": [{"price_data": item()[0]["price_data"], "quantity": 1, "quantiy": 2}]},
         "line_items[0][quantiy]"),
        ({"after_expiration": {"recovery": {"enabled": True, "enabeld": True}}},
         "after_expiration[recovery][enabeld]"),
        ({"custom_text": {"submit": {"mesage": "Thanks"}}}, "custom_text[submit][mesage]"),
        ({"surprise": "x"}, "surprise"),
    ],
)  # fmt: skip
def test_unknown_parameters_are_refused_at_any_depth_with_their_full_path(
    client: stripe.StripeClient, changes: dict[str, Any], path: str
) -> None:
    error = refused(client, **changes)
    assert error.code == "parameter_unknown"
    assert error.param == path
    assert path in str(error.user_message)


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"allow_promotion_codes": "maybe"}, "allow_promotion_codes"),
        ({"locale": "xx-nope"}, "locale"),
        ({"submit_type": "bogus"}, "submit_type"),
        ({"billing_address_collection": "always"}, "billing_address_collection"),
        ({"ui_mode": "hosted"}, "ui_mode"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"phone_number_collection": {"enabled": "yes"}}, "phone_number_collection[enabled]"),
        ({"customer": "cus_doesnotexist"}, "customer"),
        ({"discounts": [{"coupon": "SUMMER"}]}, "discounts[0][coupon]"),
        ({"line_items": item(currency="xyz")}, "line_items[0][price_data][currency]"),
        ({"line_items": item(unit_amount="12.5")}, "line_items[0][price_data][unit_amount]"),
        ({"line_items": item(tax_behavior="sometimes")},
         "line_items[0][price_data][tax_behavior]"),
        ({"line_items": item(recurring={"interval": "month"})},
         "line_items[0][price_data][recurring]"),
        ({"line_items": [{"price": "price_doesnotexist", "quantity": 1}]},
         "line_items[0][price]"),
        ({"subscription_data": {"description": "x"}}, "subscription_data"),
        ({"customer_update": {"address": "auto"}}, "customer_update"),
    ],
)  # fmt: skip
def test_every_accepted_parameter_is_validated(
    client: stripe.StripeClient, changes: dict[str, Any], param: str
) -> None:
    assert refused(client, **changes).param == param


def test_a_name_of_an_object_the_account_does_not_have_is_resource_missing(
    client: stripe.StripeClient,
) -> None:
    error = refused(client, customer="cus_doesnotexist")
    assert error.code == "resource_missing"
    assert "cus_doesnotexist" in str(error.user_message)


@pytest.mark.parametrize(
    ("currency", "amount", "ok"),
    [("eur", 49, False), ("eur", 50, True), ("usd", 49, False), ("gbp", 30, True),
     ("gbp", 29, False), ("jpy", 50, True), ("jpy", 49, False), ("EUR", 50, True)],
)  # fmt: skip
def test_totals_below_the_currency_minimum_are_refused(
    client: stripe.StripeClient, currency: str, amount: int, ok: bool
) -> None:
    changes = {"line_items": item(currency=currency, unit_amount=amount)}
    if ok:
        session = client.v1.checkout.sessions.create(params=params(**changes))
        assert (session.currency, session.amount_total) == (currency.lower(), amount)
    else:
        assert refused(client, **changes).param == "line_items"


def test_accepted_parameters_are_echoed_on_the_session(client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(
        params=params(
            allow_promotion_codes=True,
            locale="fr",
            submit_type="book",
            billing_address_collection="required",
            phone_number_collection={"enabled": True},
            tax_id_collection={"enabled": True},
            custom_text={"submit": {"message": "See you on court"}},
            consent_collection={"promotions": "auto"},
            integration_identifier="club-web",
            origin_context="web",
            shipping_address_collection={"allowed_countries": ["FR", "DE"]},
            automatic_tax={"enabled": True},
            invoice_creation={"enabled": True, "invoice_data": {"description": "Camp"}},
            customer_creation="always",
            currency="eur",
        )
    )
    again = client.v1.checkout.sessions.retrieve(session.id)
    for s in (session, again):
        assert s.allow_promotion_codes is True
        assert s.locale == "fr"
        assert s.submit_type == "book"
        assert s.billing_address_collection == "required"
        assert s.phone_number_collection is not None
        assert s.phone_number_collection.enabled
        assert s.tax_id_collection is not None
        assert s.tax_id_collection.enabled
        assert s.tax_id_collection.required == "never"
        assert s.custom_text.submit is not None
        assert s.custom_text.submit.message == "See you on court"
        assert s.consent_collection is not None
        assert s.consent_collection.promotions == "auto"
        assert s.integration_identifier == "club-web"
        assert s.origin_context == "web"
        assert s.shipping_address_collection is not None
        assert s.shipping_address_collection.allowed_countries == ["FR", "DE"]
        assert s.automatic_tax.enabled is True
        assert s.invoice_creation is not None
        assert s.invoice_creation.enabled is True
        assert s.invoice_creation.invoice_data.description == "Camp"
        assert s.customer_creation == "always"
        assert s.ui_mode == "hosted_page"


def test_line_item_metadata_and_price_fields_are_kept(client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(
        params=params(
            line_items=[
                {
                    "price_data": {
                        "currency": "eur",
                        "unit_amount": 4500,
                        "tax_behavior": "inclusive",
                        "product_data": {"name": "Summer camp", "description": "Week 1"},
                    },
                    "quantity": 2,
                    "metadata": {"player": "7"},
                    "adjustable_quantity": {"enabled": True, "maximum": 5},
                }
            ]
        )
    )
    (line,) = client.v1.checkout.sessions.line_items.list(session.id).data
    assert line.metadata is not None
    assert line.metadata["player"] == "7"
    assert line.adjustable_quantity is not None
    assert (line.adjustable_quantity.maximum, line.adjustable_quantity.minimum) == (5, 0)
    assert line.price is not None
    assert line.price.tax_behavior == "inclusive"
    assert line.price.lookup_key is None
    assert line.price.recurring is None
    assert isinstance(line.price.created, int)


def test_ui_mode_values_of_the_pinned_version(client: stripe.StripeClient) -> None:
    hosted = client.v1.checkout.sessions.create(params=params())
    assert hosted.ui_mode == "hosted_page"
    assert hosted.url is not None
    assert hosted.client_secret is None
    embedded = client.v1.checkout.sessions.create(
        params=params(
            success_url=None, ui_mode="embedded_page", return_url="https://club.example/r"
        )
    )
    assert embedded.ui_mode == "embedded_page"
    assert embedded.url is None
    assert embedded.client_secret is not None
    assert embedded.client_secret.startswith(embedded.id)
    assert embedded.redirect_on_completion == "always"
    # success_url is not allowed with embedded_page; return_url is needed
    assert refused(client, ui_mode="embedded_page", return_url="https://x.example").param == (
        "success_url"
    )
    assert refused(client, success_url=None, ui_mode="embedded_page").param == "return_url"
    assert refused(client, return_url="https://club.example/r").param == "return_url"
