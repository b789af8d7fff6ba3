"""The parents' side: a pay link that never dies, an order page, a return page that tells the
truth (and applies a payment whose webhook was lost), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
from tests.stack import Stack, running_stack

CHECKOUT = "/checkout/"


def pay(stack: Stack, order: dict[str, Any]) -> httpx.Response:
    """The parent opens the pay link (a browser without the operator's token)."""
    return httpx.get(order["pay_url"], follow_redirects=False, timeout=30)


def current_session(stack: Stack, order: dict[str, Any]) -> str:
    session: str = stack.api.get(f"/orders/{order['id']}").json()["checkout_session_id"]
    return session


def open_sessions_of(stack: Stack, order_id: int) -> list[str]:
    return [
        sid
        for sid in stack.sandbox.sessions(status="open")
        if stack.sandbox.session(sid)["metadata"]["order_id"] == str(order_id)
    ]


def test_the_pay_link_of_a_live_order_goes_straight_to_its_checkout(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        assert order["pay_url"] == f"{stack.api_url}/pay/{order['access_token']}"
        assert "checkout_url" not in order  # Stripe's URL is never handed out
        r = pay(stack, order)
        assert r.status_code == 303
        assert r.headers["location"].startswith(stack.sandbox_url + CHECKOUT)
        assert order["checkout_session_id"] in r.headers["location"]
        assert len(stack.sandbox.sessions()) == 1  # nothing new was made


def test_a_dead_links_pay_url_opens_one_fresh_live_checkout(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("monthly")
        dead = order["checkout_session_id"]
        stack.sdk.v1.checkout.sessions.expire(dead)
        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.refresh()["monthly"] == 1

        first = pay(stack, order)
        assert first.status_code == 303, first.text
        fresh = current_session(stack, order)
        assert fresh != dead
        assert first.headers["location"].startswith(f"{stack.sandbox_url}{CHECKOUT}{fresh}")
        assert stack.sandbox.sessions()[fresh]["status"] == "open"
        again = pay(stack, order)  # a second click: the same live link, no new session
        assert again.headers["location"] == first.headers["location"]
        assert open_sessions_of(stack, order["id"]) == [fresh]
        assert stack.refresh()["monthly"] == 0  # no longer stranded


def test_an_order_without_a_link_gets_one_from_its_pay_link(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("jersey", create_checkout=False)
        assert order["checkout_session_id"] is None
        r = pay(stack, order)
        assert r.status_code == 303
        assert r.headers["location"].startswith(stack.sandbox_url + CHECKOUT)
        assert open_sessions_of(stack, order["id"]) == [current_session(stack, order)]


def test_paid_and_cancelled_orders_show_their_state(database_url: str) -> None:
    with running_stack(database_url) as stack:
        paid, cancelled = stack.order("tournament"), stack.order("jersey")
        stack.sandbox.pay(paid["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        httpx.post(f"{stack.api_url}/orders/by-token/{cancelled['access_token']}/cancel")
        before = len(stack.sandbox.sessions())
        for order, state in ((paid, "paid"), (cancelled, "cancelled")):
            r = pay(stack, order)
            assert r.status_code == 303
            assert r.headers["location"] == f"/o/{order['access_token']}"
            page = httpx.get(order["order_url"])
            assert page.status_code == 200
            assert f'id="state" class="state {state}"' in page.text
            assert 'id="pay"' not in page.text
        assert len(stack.sandbox.sessions()) == before  # no session made for either


def test_the_order_page_shows_the_order_and_a_pay_button(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament", player_name="علی\u200cرضا")  # noqa: RUF001
        page = httpx.get(order["order_url"])
        assert page.status_code == 200
        assert 'name="viewport"' in page.text
        assert "علی\u200cرضا" in page.text  # noqa: RUF001
        assert f'id="pay" href="{order["pay_url"]}"' in page.text
        assert "parent@example.org" not in page.text
        assert stack.sandbox_url not in page.text


def test_wrong_links_say_nothing_about_which_orders_exist(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        token = order["access_token"]
        wrong = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        answers = set()
        for path in (f"/pay/{wrong}", f"/o/{wrong}", f"/pay/{order['id']}", "/o/1"):
            r = httpx.get(f"{stack.api_url}{path}", follow_redirects=False)
            assert r.status_code == 404, path
            assert "<html" in r.text
            answers.add(r.text)
        assert len(answers) == 1
        assert len(stack.sandbox.sessions()) == 1


def returned(stack: Stack, session_id: str, token: str | None = None) -> httpx.Response:
    """The return page reached with a session id (and, if given, a token) only."""
    params = {"session_id": session_id, **({"token": token} if token else {})}
    return httpx.get(f"{stack.api_url}/checkout/return", params=params)


def way_back(stack: Stack, session_id: str) -> str:
    """Where Checkout sends the parent after paying: the link's ``success_url``, filled in."""
    url: str = stack.sandbox.session(session_id)["success_url"]
    return url.replace("{CHECKOUT_SESSION_ID}", session_id)


def parent_returns(stack: Stack, session_id: str) -> httpx.Response:
    return httpx.get(way_back(stack, session_id))


def test_the_return_page_applies_a_payment_whose_webhook_was_lost(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        stack.sandbox.drop_next_webhooks(1)
        stack.sandbox.pay(order["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        assert stack.api.get(f"/orders/{order['id']}").json()["status"] == "pending"

        page = returned(stack, order["checkout_session_id"])
        assert page.status_code == 200
        assert "Paid" in page.text
        assert stack.api.get(f"/orders/{order['id']}").json()["status"] == "paid"
        assert "Paid" in returned(stack, order["checkout_session_id"]).text  # idempotent
        assert stack.refresh()["tournament"] == 0


def test_the_return_page_refuses_a_foreign_session(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        foreign = stack.sdk.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "success_url": "https://elsewhere.example/ok",
                "metadata": {"order_id": str(order["id"])},  # claims to be for the order
                "line_items": [
                    {
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": 100,
                            "product_data": {"name": "Something else"},
                        },
                        "quantity": 1,
                    }
                ],
            }
        )
        stack.sandbox.pay(foreign.id)
        page = returned(stack, foreign.id)
        assert page.status_code == 404
        assert "not one of ours" in page.text
        assert stack.api.get(f"/orders/{order['id']}").json()["status"] == "pending"
        assert returned(stack, "cs_test_made_up").status_code == 404
        assert returned(stack, "<script>").status_code == 422


def test_unpaid_and_expired_sessions_say_so_and_offer_the_pay_link(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("monthly")
        page = parent_returns(stack, order["checkout_session_id"])
        assert "not paid yet" in page.text
        assert f'href="{order["pay_url"]}"' in page.text
        stack.sdk.v1.checkout.sessions.expire(order["checkout_session_id"])
        page = parent_returns(stack, order["checkout_session_id"])
        assert "expired" in page.text
        link = page.text.split('id="pay" href="')[1].split('"')[0]
        r = httpx.get(link, follow_redirects=False)  # the offered link opens a fresh checkout
        assert r.status_code == 303
        assert r.headers["location"].startswith(stack.sandbox_url + CHECKOUT)
        assert stack.api.get(f"/orders/{order['id']}").json()["status"] == "pending"


def test_a_session_id_alone_grants_nothing_of_the_order(database_url: str) -> None:
    """Session ids appear in log lines: with one and no token of its order, the return page
    says whether that session was paid, and shows no name, offers no link, mints no token."""
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        other = stack.order("monthly", player_name="Riley")
        sid = order["checkout_session_id"]
        wrong = order["access_token"][:-2] + ("AA" if order["access_token"][-2:] != "AA" else "BB")
        for token in (None, other["access_token"], wrong, "short"):
            page = returned(stack, sid, token)
            assert page.status_code == 200, token
            assert "not paid yet" in page.text
            assert "Jordan" not in page.text
            assert "Riley" not in page.text
            assert 'id="pay"' not in page.text
            assert "/pay/" not in page.text
            assert "/o/" not in page.text
        stack.sdk.v1.checkout.sessions.expire(sid)
        page = returned(stack, sid)
        assert "expired" in page.text
        assert 'id="pay"' not in page.text
        assert "Jordan" not in page.text

        # Paid: the session id alone still settles the order (fulfilment on return stays).
        late = stack.order("tournament", player_name="Casey")
        stack.sandbox.drop_next_webhooks(1)
        stack.sandbox.pay(late["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        page = returned(stack, late["checkout_session_id"])
        assert "Paid" in page.text
        assert "Casey" not in page.text
        assert stack.api.get(f"/orders/{late['id']}").json()["status"] == "paid"


def test_the_way_back_from_checkout_carries_the_orders_token(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        sid = order["checkout_session_id"]
        assert way_back(stack, sid).startswith(f"{stack.api_url}/checkout/return?session_id={sid}")
        page = parent_returns(stack, sid)
        assert 'id="player"' in page.text
        assert "Jordan" in page.text
        assert f'href="{order["pay_url"]}"' in page.text
        # A link made later (the old one expired) brings its parent back with a token too,
        # one that opens the same order and no other.
        stack.sdk.v1.checkout.sessions.expire(sid)
        assert pay(stack, order).status_code == 303
        fresh = current_session(stack, order)
        assert fresh != sid
        page = parent_returns(stack, fresh)
        assert "Jordan" in page.text
        link = page.text.split('id="pay" href="')[1].split('"')[0]
        assert link.startswith(f"{stack.api_url}/pay/")
        assert link != order["pay_url"]
        token = link.rsplit("/", 1)[1]
        assert "Jordan" in httpx.get(f"{stack.api_url}/o/{token}").text
        other = stack.order("monthly", player_name="Riley")
        assert "Riley" not in returned(stack, other["checkout_session_id"], token).text
        assert "Jordan" not in returned(stack, other["checkout_session_id"], token).text
        stack.sandbox.pay(fresh)
        assert "Paid" in parent_returns(stack, fresh).text


def test_the_pay_link_is_rate_limited_per_client(database_url: str) -> None:
    with running_stack(database_url, pay_link_rate_limit="3/minute") as stack:
        order = stack.order("tournament")
        answers = [pay(stack, order) for _ in range(4)]
        assert [r.status_code for r in answers] == [303, 303, 303, 429]
        assert 0 < int(answers[3].headers["retry-after"]) <= 60


def test_a_slow_stripe_on_the_pay_link_is_a_page_saying_try_again(database_url: str) -> None:
    with running_stack(database_url, stripe_max_network_retries=0) as stack:
        order = stack.order("tournament")
        stack.sdk.v1.checkout.sessions.expire(order["checkout_session_id"])
        stack.sandbox.inject_fault("POST /v1/checkout/sessions", "unavailable")
        r = pay(stack, order)
        assert r.status_code == 503
        assert r.headers["retry-after"]
        assert "try again" in r.text
        assert pay(stack, order).status_code == 303  # and the same link works a moment later


def test_the_demo_seeding_hands_out_a_pay_link(database_url: str) -> None:
    from basketball_api.demo import EXPECTED, seed

    with running_stack(database_url) as stack:
        link = seed(stack.api, stack.sdk, stack.sandbox)
        assert link.startswith(f"{stack.api_url}/pay/")
        r = httpx.get(link, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith(stack.sandbox_url + CHECKOUT)
        assert stack.refresh() == EXPECTED


def test_the_parents_pages_are_never_cached_nor_sent_on_as_referrer(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        for r in (
            httpx.get(order["order_url"]),
            pay(stack, order),
            returned(stack, order["checkout_session_id"]),
        ):
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["referrer-policy"] == "no-referrer"
