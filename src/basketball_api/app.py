"""App factory and lifespan: builds the engine, the Stripe gateway and the refresher task,
and tears them down in reverse. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy.orm import Session, sessionmaker
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from basketball_api import (
    __version__,
    access,
    admin,
    catalogue_admin,
    docs,
    health,
    lifecycle,
    notify,
    ordering,
    paylink,
    payments,
    recovery,
    reviews,
    routes,
    stranded_admin,
    treasurer_admin,
    webhooks,
)
from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.deps import Services, get_services
from basketball_api.errors import Api, install_error_handlers
from basketball_api.lease import Lease
from basketball_api.metrics import Metrics
from basketball_api.operators import Operators
from basketball_api.ops import make_refresher
from basketball_api.orders import get_order
from basketball_api.ratelimit import RateLimits
from basketball_api.refresher import Refresher
from basketball_api.settings import Settings
from basketball_api.stripe_gateway import StripeGateway

_frozen = False


def freeze_startup_objects() -> None:
    """Take what is alive at start-up out of the garbage collector's sight, once a process.

    A full collection walks every tracked object, and the app with its libraries holds
    ~150,000 of them: during a cold listing at 100,000 pending orders (each Stripe page decodes
    into ~30,000 objects) the collector ran 19 full collections of up to 240 ms, on whichever
    thread allocated, so the event loop stood still and ``/metrics`` p99 was 206 ms; frozen, the
    longest is 6 ms and p99 21 ms (docs/performance.md). Modules, the app and its services live
    as long as the process; everything made later is collected as before.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None, *, start_refresher: bool = True) -> FastAPI:
    """A fully wired app; ``start_refresher=False`` lets tests drive refreshes by hand."""
    settings = settings or Settings()
    metrics = Metrics()
    metrics.publish_urgent_categories(frozenset(settings.urgent_categories))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        factory = make_session_factory(engine)
        gateway = StripeGateway.from_settings(settings, metrics)
        gateway.start()

        async def heal(session_ids: list[str]) -> list[str]:
            def work() -> list[str]:
                with transaction(factory) as db:
                    return recovery.heal_paid_orders(db, session_ids)

            return await run_in_threadpool(work)

        refresher = make_refresher(settings, factory, gateway, metrics, Lease(engine))
        refresher.heal_paid = heal if settings.heal_paid_orders else None
        stranded = lifecycle.Lifecycle(
            factory,
            policy=lifecycle.Policy.from_settings(settings),
            dead_orders=partial(_dead_orders, refresher),
            stripe_now=gateway.stripe_now,
            send_link=partial(_send_link, settings, factory),
            metrics=metrics,
            interval_seconds=settings.refresh_interval_seconds,
            after_change=refresher.request_recount,
            urgent=partial(_urgent, settings),
        )
        app.state.services = Services(settings, metrics, factory, gateway, refresher, stranded)
        metrics.up.set(1)
        freeze_startup_objects()
        upkeep: asyncio.Task[None] | None = None
        if start_refresher:
            refresher.start()
            upkeep = asyncio.create_task(
                payments.upkeep(factory, gateway, metrics, settings.refresh_interval_seconds),
                name="payments-upkeep",
            )
            stranded.start()
        try:
            yield
        finally:
            metrics.up.set(0)
            if upkeep is not None:
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep
            await stranded.stop()
            await refresher.stop()
            await ordering.drain(within_seconds=10)
            await gateway.aclose()
            engine.dispose()

    app = Api(
        title="basketball-api",
        summary="Orders and Stripe Checkout payments for a youth basketball club.",
        version=__version__,
        lifespan=lifespan,
        # The documentation pages are served from packaged assets (docs.py), not a CDN.
        docs_url=None,
        redoc_url=None,
        # Starlette's limit, counted as the body streams in (no declared length needed): 413.
        max_body_size=settings.request_max_body_bytes,
    )
    app.state.rate_limits = RateLimits(settings)
    app.state.operators = Operators(settings)
    if settings.forwarded_allow_ips:
        # Behind the TLS proxy: its X-Forwarded-Proto makes request.url https (the session
        # cookie is then Secure) and X-Forwarded-For names the client (login throttling).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    install_error_handlers(app)
    webhooks.install_webhook_errors(app, get_services)
    paylink.install_link_errors(app)
    app.include_router(health.router)
    docs.install(app)
    app.include_router(routes.router)
    app.include_router(paylink.router)
    app.include_router(webhooks.router, max_body_size=settings.webhook_max_body_bytes)
    app.include_router(admin.router)
    app.include_router(stranded_admin.router)
    app.include_router(catalogue_admin.router)
    app.include_router(treasurer_admin.router)
    app.include_router(reviews.router)
    Instrumentator(
        registry=metrics.registry,
        excluded_handlers=["/metrics"],
        should_group_untemplated=True,
    ).instrument(app)
    return app


def _dead_orders(refresher: Refresher, db: Session, now: float) -> dict[int, str] | None:
    """Pending orders whose link is dead, decided as the gauge decides it; None before the
    first successful refresh (nothing is known yet)."""
    if refresher.last_success_at is None:
        return None
    found = recovery.stranded_orders(db, now=now, grace=refresher.grace)
    return {s.order_id: s.category for s in found}


def _send_link(settings: Settings, factory: sessionmaker[Session], order_id: int) -> bool:
    """Email the parent of a stranded order its pay link (``/pay/{token}``, a new token of
    its own): it opens a fresh Checkout page whenever the parent gets to it, so no Stripe call
    is made now. False when it could not be sent."""
    if not notify.configured(settings):
        return False
    with transaction(factory) as db:
        order = get_order(db, order_id)
        to, product = order.parent_email, order.product.name
        token = access.issue_token(db, order_id, "stranded_email")
    return notify.send_new_link(
        settings,
        to=to,
        order_id=order_id,
        product=product,
        url=access.pay_url(settings, token),
    )


def _urgent(settings: Settings, db: Session, now: float) -> frozenset[str]:
    return lifecycle.urgent_categories(
        db,
        now=now,
        days_before_event=settings.urgent_days_before_event,
        configured=frozenset(settings.urgent_categories),
    )
