"""``POST /webhooks/stripe``: verify (fail closed), record the event id once, apply it.

Verification is a dependency; applying runs in one transaction whose first write is the event
id under a unique constraint, so a duplicate delivery (even to another replica at the same
moment) is recognised and applied zero more times.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

import stripe
import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from basketball_api import access, link_state, payments
from basketball_api.db import transaction
from basketball_api.deps import Services, ServicesDep
from basketball_api.link_state import CHECKOUT_EVENT_TYPES
from basketball_api.models import Learnt, ProcessedWebhookEvent
from basketball_api.stripe_gateway import SessionSnapshot

log = structlog.get_logger("basketball_api.webhooks")
router = APIRouter()

SIGNATURE_TOLERANCE_SECONDS = 300
HANDLED = frozenset(CHECKOUT_EVENT_TYPES)


class WebhookRefused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Applied:
    result: str  # applied | needs_review | duplicate | ignored
    settled: payments.Settlement | None = None
    link_changed: bool = False  # a link's state or an order moved: the gauges need a recount


async def verified_event(request: Request, services: ServicesDep) -> dict[str, Any]:
    """The event, only if Stripe signed it with our secret; otherwise a refusal."""
    secret = services.settings.stripe_webhook_secret
    if secret is None:
        raise WebhookRefused(503, "no_secret", "webhook secret not configured; refusing events")
    limit = services.settings.webhook_max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise WebhookRefused(413, "too_large", f"payload larger than {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise WebhookRefused(413, "too_large", f"payload larger than {limit} bytes")
    header = request.headers.get("stripe-signature")
    if not header:
        raise WebhookRefused(400, "missing_signature", "Stripe-Signature header missing")
    try:
        payload = body.decode("utf-8")
        stripe.WebhookSignature.verify_header(
            payload, header, secret.get_secret_value(), tolerance=SIGNATURE_TOLERANCE_SECONDS
        )
    except UnicodeDecodeError as e:
        raise WebhookRefused(400, "bad_payload", "payload is not a Stripe event") from e
    except stripe.SignatureVerificationError as e:
        stale = "tolerance" in str(e).lower()
        reason = "stale_timestamp" if stale else "bad_signature"
        raise WebhookRefused(400, reason, "signature verification failed") from e
    # Stripe's check only looks back; a signature dated ahead is refused the same way.
    if _signed_at(header) > time.time() + SIGNATURE_TOLERANCE_SECONDS:
        raise WebhookRefused(400, "stale_timestamp", "signature timestamp is in the future")
    try:
        data = json.loads(payload)
    except ValueError as e:
        raise WebhookRefused(400, "bad_payload", "payload is not a Stripe event") from e
    problem = _shape_problem(data)
    if problem is not None:
        raise WebhookRefused(400, "bad_payload", problem)
    event: dict[str, Any] = data
    return event


def _signed_at(header: str) -> int:
    """The ``t=`` of a header ``verify_header`` accepted (so it is there and an integer)."""
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            return int(value)
    return 0


def _shape_problem(data: Any) -> str | None:
    """Why a signed payload cannot be an event we could store and apply (None if it can).

    Refusing it with a 400 says what is wrong; letting it fail in the database would count a
    ``processing_error`` and have Stripe retry something that can never apply.
    """
    if not isinstance(data, dict):
        return "payload is not a JSON object"
    for key, longest in (("id", 255), ("type", 100)):
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value) > longest or "\x00" in value:
            return f"event {key} missing or not a string of at most {longest} characters"
    body = data.get("data") or {}
    obj = body.get("object") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance({} if obj is None else obj, dict):
        return "event data.object is not an object"
    session_id = (obj or {}).get("id")
    if session_id is not None and (
        not isinstance(session_id, str) or len(session_id) > 255 or "\x00" in session_id
    ):
        return "data.object.id is not an id"
    return None


def apply_event(factory: sessionmaker[Session], event: dict[str, Any]) -> Applied:
    """Apply one verified event exactly once; safe to call concurrently from many processes."""
    try:
        with transaction(factory) as db:
            db.add(ProcessedWebhookEvent(stripe_event_id=event["id"], type=event["type"]))
            db.flush()
            return _apply(db, event)
    except IntegrityError:
        return Applied("duplicate")


def _apply(db: Session, event: dict[str, Any]) -> Applied:
    kind = event["type"]
    obj = (event.get("data") or {}).get("object") or {}
    if kind not in HANDLED or obj.get("object") != "checkout.session" or not obj.get("id"):
        return Applied("ignored")
    snapshot = _snapshot(event, obj)
    if snapshot is None:
        return Applied("ignored")
    # The order first (settle locks it), then its link: the order every path locks them in.
    settled = payments.settle(db, snapshot, via="webhook", event_id=event["id"])
    fact = link_state.fact_of(snapshot, kind)
    changed = bool(link_state.learn(db, {snapshot.id: fact}, Learnt.webhook))
    if settled.outcome == payments.Outcome.not_ours:
        return Applied("ignored", link_changed=changed)
    # checkout.session.expired leaves the order pending: a dead link is what the gauge counts.
    result = "needs_review" if settled.outcome == payments.Outcome.needs_review else "applied"
    changed = changed or settled.outcome == payments.Outcome.applied
    return Applied(result, settled, changed)


def _snapshot(event: dict[str, Any], obj: dict[str, Any]) -> SessionSnapshot | None:
    """The event's session, or None when it cannot be read (the poller learns it instead)."""
    try:
        return SessionSnapshot.from_stripe(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log.warning("webhook_session_unreadable", event_id=event["id"], error=type(e).__name__)
        return None


@router.post("/webhooks/stripe", tags=["webhooks"])
async def stripe_webhook(
    event: Annotated[dict[str, Any], access.webhook_signature(verified_event)],
    services: ServicesDep,
) -> dict[str, str]:
    """Receives Stripe's signed events (configure this URL in the Stripe dashboard)."""
    try:
        applied = await run_in_threadpool(apply_event, services.sessions, event)
    except Exception as e:
        services.metrics.webhook_errors.labels(reason="processing_error").inc()
        log.warning(
            "webhook_failed", event_id=event["id"], type=event["type"], error=type(e).__name__
        )
        raise WebhookRefused(500, "processing_error", "event not applied; Stripe will retry") from e
    kind = event["type"] if event["type"] in HANDLED else "other"  # a bounded label
    services.metrics.webhook_events.labels(type=kind, result=applied.result).inc()
    if applied.link_changed:
        services.refresher.request_recount()  # coalesced: a burst costs one recount
    if applied.settled is not None:
        await payments.after_commit(
            services.sessions, services.gateway, services.metrics, applied.settled
        )
    return {"status": applied.result}


def install_webhook_errors(app: Any, services_of: Any) -> None:
    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, WebhookRefused)
        services: Services = services_of(request)
        if exc.reason != "processing_error":
            services.metrics.webhook_errors.labels(reason=exc.reason).inc()
            log.warning("webhook_refused", reason=exc.reason, status=exc.status)
        return JSONResponse({"detail": exc.message, "code": exc.reason}, exc.status)

    app.add_exception_handler(WebhookRefused, refused)
