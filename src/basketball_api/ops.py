"""Operator commands' plumbing: build what a one-shot command needs, refresh once first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from basketball_api.db import make_engine, make_session_factory
from basketball_api.lease import Lease
from basketball_api.metrics import Metrics
from basketball_api.poller_store import Store
from basketball_api.refresher import Refresher
from basketball_api.settings import Settings
from basketball_api.stripe_gateway import StripeGateway


@dataclass
class Toolkit:
    settings: Settings
    sessions: sessionmaker[Session]
    gateway: StripeGateway
    refresher: Refresher


def make_refresher(
    settings: Settings,
    factory: sessionmaker[Session],
    gateway: StripeGateway,
    metrics: Metrics,
    lease: Lease | None,
) -> Refresher:
    return Refresher(
        store=Store(factory),
        source=gateway,
        metrics=metrics,
        lease=lease,
        interval_seconds=settings.refresh_interval_seconds,
        deadline_seconds=settings.refresh_deadline_seconds,
        grace_seconds=settings.expiry_grace_seconds,
    )


@asynccontextmanager
async def toolkit(settings: Settings, *, refresh: bool = True) -> AsyncIterator[Toolkit]:
    """Engine + gateway + a refresher that has refreshed once (polling Stripe unless another
    process holds the polling lease), torn down after."""
    engine = make_engine(settings.database_url)
    metrics = Metrics()
    gateway = StripeGateway.from_settings(settings, metrics)
    factory = make_session_factory(engine)
    refresher = make_refresher(settings, factory, gateway, metrics, Lease(engine))
    try:
        if refresh:
            await refresher.refresh_once()
        yield Toolkit(settings, factory, gateway, refresher)
    finally:
        await refresher.stop()
        await gateway.aclose()
        engine.dispose()
