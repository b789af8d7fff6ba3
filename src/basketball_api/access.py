"""Who may call each route: every route declares exactly one rule, as a dependency from here.

The rules:

- ``public``: anyone (the catalogue, order creation, the return page, health, metrics);
- ``order_token``: whoever holds one of the order's access tokens (the pay link, the order
  page, the parent's own reads and changes);
- ``webhook_signature``: Stripe, proven by the ``Stripe-Signature`` header;
- ``operator``: an operator credential (everything that reads or changes an order by its id,
  and every ``/admin`` route).

A rule is a dependency registered with :func:`declare`; ``tests/test_access.py`` walks
``app.routes`` and fails for any route that declares none, or more than one.

Order tokens are capabilities: 192 random bits, handed out in a link, kept only as their
SHA-256 (a high-entropy secret needs no slow hash), looked up by that digest and compared in
constant time. An order may have several (the confirmation, each email, the operator's copy),
all valid for the order's life, so a link a parent holds never stops working; none can be
rebuilt from the database.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from basketball_api.db import transaction
from basketball_api.deps import ServicesDep
from basketball_api.errors import NotFound
from basketball_api.models import OrderAccessToken
from basketball_api.settings import Settings


class Rule(enum.StrEnum):
    public = "public"
    order_token = "order_token"  # noqa: S105 (a rule name, not a secret)
    webhook_signature = "webhook_signature"
    operator = "operator"


_RULES: dict[Callable[..., Any], Rule] = {}

#: Routes FastAPI adds by itself (the OpenAPI schema and its documentation pages): public.
FRAMEWORK_PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def declare(rule: Rule, check: Callable[..., Any]) -> Any:
    """``Depends(check)``, with ``check`` registered as the enforcement of ``rule``."""
    known = _RULES.setdefault(check, rule)
    if known != rule:
        raise ValueError(f"{check.__qualname__} already enforces {known.value}")
    return Depends(check)


def operator(check: Callable[..., Any]) -> Any:
    """Register an operator credential check (it raises when the caller is not an operator)."""
    return declare(Rule.operator, check)


def webhook_signature(check: Callable[..., Any]) -> Any:
    return declare(Rule.webhook_signature, check)


def rules_of(dependant: Dependant) -> list[Rule]:
    """Every rule declared by a route's dependencies, nested ones included."""
    found = []
    for sub in dependant.dependencies:
        rule = _RULES.get(sub.call) if sub.call is not None else None
        if rule is not None:
            found.append(rule)
        found.extend(rules_of(sub))
    return found


def route_rules(app: FastAPI) -> Iterator[tuple[str, set[str], list[Rule]]]:
    """``(path, methods, rules)`` of every route of ``app``; a well-formed route has one rule."""
    for route in iter_route_contexts(app.routes):
        path = route.path or repr(route.original_route)
        methods = set(route.methods or {"*"})
        if isinstance(route.original_route, APIRoute):
            # The effective route: dependencies of the routers it was included with count too.
            yield path, methods, rules_of(route.dependant)
        elif path in FRAMEWORK_PUBLIC_PATHS:
            yield path, methods, [Rule.public]
        else:
            yield path, methods, []


async def _anyone() -> None:
    """Public: no credential is asked. Async, so it never waits for a worker thread."""


PUBLIC = declare(Rule.public, _anyone)


# -- order tokens ---------------------------------------------------------------------------------

TOKEN_BYTES = 24  # 192 bits; token_urlsafe gives 32 characters
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Session, order_id: int, purpose: str) -> str:
    """A new access token for the order (the caller's transaction stores its digest)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    db.add(OrderAccessToken(order_id=order_id, token_sha256=digest(token), purpose=purpose))
    return token


def issue_link_token(factory: sessionmaker[Session], order_id: int, purpose: str) -> str:
    """:func:`issue_token` in a transaction of its own."""
    with transaction(factory) as db:
        return issue_token(db, order_id, purpose)


def pay_url(settings: Settings, token: str) -> str:
    """The order's pay link: the only payment URL ever handed to a parent."""
    return f"{settings.public_base_url.rstrip('/')}/pay/{token}"


def order_page_url(settings: Settings, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/o/{token}"


def order_for_token(db: Session, token: str) -> int | None:
    """The id of the order ``token`` opens, or None; the same answer time for any wrong token
    of the right shape (a digest lookup, then a constant-time comparison)."""
    if not _TOKEN_SHAPE.fullmatch(token):
        return None
    wanted = digest(token)
    row = db.execute(
        select(OrderAccessToken.order_id, OrderAccessToken.token_sha256).where(
            OrderAccessToken.token_sha256 == wanted
        )
    ).first()
    if row is None or not hmac.compare_digest(row.token_sha256, wanted):
        return None
    return int(row.order_id)


class UnknownLink(NotFound):
    """No order has this token; says nothing about which orders exist."""

    code = "unknown_link"

    def __init__(self) -> None:
        super().__init__("no order has this link; check that it was copied whole")


def _order_of_token(token: str, services: ServicesDep) -> int:
    with transaction(services.sessions) as db:
        order_id = order_for_token(db, token)
    if order_id is None:
        raise UnknownLink
    return order_id


ORDER_TOKEN = declare(Rule.order_token, _order_of_token)
#: The order a route's ``{token}`` path parameter opens (404 for any other token).
TokenOrderId = Annotated[int, ORDER_TOKEN]
