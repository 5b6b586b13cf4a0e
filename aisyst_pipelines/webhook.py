"""The Stripe webhook receiver: a small ASGI app for teams that prefer push to polling.

    POST /stripe/webhook     Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
    GET  /healthz

It verifies the signature over the raw body with the endpoint's signing secret (`whsec_…`, given
through the environment, never logged) and Stripe's 300-second tolerance, then hands the event to
the same handler as `stripe_events_sensor` (`events_store.apply_event`), which applies an event once
whichever path delivers it first. Answers:
- 400 for a missing, malformed, wrong or stale signature, or a body that is not a Stripe event;
- 200 for an applied, duplicate (a replay, or the sensor was first), stale or ignored event;
- 500 when the warehouse cannot take the event — Stripe then retries the delivery.
Ops alerts the event raised are queued in the same transaction and sent after the answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone

import stripe
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aisyst_pipelines.assets.stripe_events import deliver_event_alerts
from aisyst_pipelines.billing.stripe_events import EventPayloadError, StripeEvent
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.events_store import SubscriptionRowBuilder, apply_event
from resources.notifier import NotifierResource

WEBHOOK_PATH = "/stripe/webhook"
SIGNATURE_TOLERANCE_SECONDS = 300  # Stripe's default (stripe.Webhook.DEFAULT_TOLERANCE)
MAX_BODY_BYTES = 1_000_000  # Stripe events are a few KB; anything this large is not one

log = logging.getLogger(__name__)


def create_webhook_app(
    warehouse: Warehouse,
    signing_secret: str,
    *,
    notifier: NotifierResource | None = None,
    mirror_row: SubscriptionRowBuilder | None = None,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> Starlette:
    """The receiver. Without a notifier, queued ops alerts wait for the sensor to send them;
    `mirror_row` as for the sensor (subscriptions new since the last sync are mirrored at once)."""
    if not signing_secret or not signing_secret.strip():
        raise ValueError("the webhook signing secret (STRIPE_WEBHOOK_SECRET) is empty")

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _refuse("payload too large")
        try:
            stripe.WebhookSignature.verify_header(
                body.decode("utf-8"), request.headers.get("stripe-signature"), signing_secret, tolerance_seconds
            )
        except stripe.SignatureVerificationError as error:
            # The SDK's message says which check failed (no header, no match, too old); it never
            # contains the secret. The payload is not echoed back.
            return _refuse(f"signature verification failed: {error.user_message or 'invalid signature'}")
        except UnicodeDecodeError:
            return _refuse("payload is not UTF-8")
        try:
            event = StripeEvent.from_payload(json.loads(body))
        except (json.JSONDecodeError, EventPayloadError, TypeError, AttributeError) as error:
            return _refuse(f"not a Stripe event: {error}")

        try:
            outcome = await run_in_threadpool(
                apply_event, warehouse, event, source="webhook", now=clock(), mirror_row=mirror_row
            )
        except Exception:  # noqa: BLE001 - any failure: answer 500 so that Stripe delivers it again
            log.exception("webhook: could not apply event %s (%s)", event.id, event.type)
            return JSONResponse({"error": "event could not be stored; retry"}, status_code=500)
        background = (
            BackgroundTask(deliver_event_alerts, warehouse, notifier, now=clock())
            if notifier is not None and outcome.alerts
            else None
        )
        return JSONResponse(
            {"received": True, "event": event.id, "type": event.type, "outcome": outcome.outcome},
            background=background,
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route(WEBHOOK_PATH, receive, methods=["POST"]), Route("/healthz", health)])


def _refuse(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)
