"""Operator commands' plumbing: build what a one-shot command needs, learn sessions cold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from basketball_api import orders
from basketball_api.db import make_engine, make_session_factory, transaction
from basketball_api.knowledge import SessionKnowledge
from basketball_api.metrics import Metrics
from basketball_api.session_sync import PendingRows, sync_knowledge
from basketball_api.settings import Settings
from basketball_api.stripe_gateway import StripeGateway


def load_pending(factory: sessionmaker[Session]) -> PendingRows:
    with transaction(factory) as db:
        return orders.load_pending_rows(db)


@dataclass
class Toolkit:
    settings: Settings
    sessions: sessionmaker[Session]
    gateway: StripeGateway
    knowledge: SessionKnowledge


@asynccontextmanager
async def toolkit(settings: Settings) -> AsyncIterator[Toolkit]:
    """Engine + gateway + freshly learnt knowledge (a cold refresh), torn down after."""
    engine = make_engine(settings.database_url)
    gateway = StripeGateway.from_settings(settings, Metrics())
    try:
        factory = make_session_factory(engine)
        knowledge = SessionKnowledge()
        await sync_knowledge(knowledge, gateway, load_pending(factory))
        yield Toolkit(settings, factory, gateway, knowledge)
    finally:
        await gateway.aclose()
        engine.dispose()
