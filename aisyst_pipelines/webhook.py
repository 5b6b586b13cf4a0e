"""The Stripe webhook receiver: a small ASGI app for teams that prefer push to polling.

    POST /stripe/webhook     Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
    GET  /healthz

It verifies the signature over the raw body with the endpoint's signing secret (`whsec_…`, given
through the environment, never logged) and Stripe's 300-second tolerance, then hands the event to
the Stripe events service as `stripe_events_sensor` does (services/stripe_events.py), which applies an
event once whichever path delivers it first. Answers (errors as `{"error": "<reason>"}`):
- 413 for a body over MAX_BODY_BYTES: from its Content-Length before any of it is read, or — sent
  chunked, without a length — as soon as the bytes read pass the limit. The connection is closed
  rather than the rest read. Memory per request stays within the limit plus one chunk;
- 400 for a Content-Length that is not a byte count, a body longer than its Content-Length, a
  missing, malformed, wrong or stale signature, or a signed body that is not a Stripe event we can
  read (`StripeEvent.from_json` says why: a null or absurd `created`, an invoice event whose
  `data.object` is no invoice, a value the warehouse cannot hold…) — Stripe shows the reason in its
  dashboard; nothing is stored;
- 200 for an applied, duplicate (a replay, or the sensor was first), stale or ignored event;
- 500 only when the warehouse cannot store a well-formed event — Stripe then retries the delivery.
Ops alerts the event raised are queued in the same transaction and sent after the answer.

uvicorn itself bounds no request body: it hands the app each piece as it arrives and only pauses the
socket while more than 64 KiB wait unread (uvicorn.protocols.http.flow_control.HIGH_WATER_LIMIT).
Its parsers' limits are on the header block only (h11: 16 KiB, `h11_max_incomplete_event_size`), and
nothing times out a slow body: the reverse proxy in front (TLS) should set a body timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import aclosing
from datetime import datetime, timezone

import stripe
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aisyst_pipelines.billing.stripe_events import EventPayloadError, StripeEvent
from aisyst_pipelines.mail import Notifier
from aisyst_pipelines.services.stripe_events import apply_webhook_event, deliver_event_alerts
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.stripe_events_store import SubscriptionRowBuilder

WEBHOOK_PATH = "/stripe/webhook"
SIGNATURE_TOLERANCE_SECONDS = 300  # Stripe's default (stripe.Webhook.DEFAULT_TOLERANCE)
MAX_BODY_BYTES = 1_000_000  # Stripe events are a few KB; anything this large is not one

log = logging.getLogger(__name__)


def create_webhook_app(
    warehouse: Warehouse,
    signing_secret: str,
    *,
    notifier: Notifier | None = None,
    mirror_row: SubscriptionRowBuilder | None = None,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> Starlette:
    """The receiver. Without a notifier, queued ops alerts wait for the sensor to send them;
    `mirror_row` as for the sensor (subscriptions new since the last sync are mirrored at once)."""
    if not signing_secret or not signing_secret.strip():
        raise ValueError("the webhook signing secret (STRIPE_WEBHOOK_SECRET) is empty")

    async def receive(request: Request) -> JSONResponse:
        body = await _read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            text = body.decode("utf-8")
            stripe.WebhookSignature.verify_header(text, request.headers.get("stripe-signature"), signing_secret, tolerance_seconds)
        except stripe.SignatureVerificationError as error:
            # The SDK's message says which check failed (no header, no match, too old); it never
            # contains the secret. The payload is not echoed back.
            return _refuse(f"signature verification failed: {error.user_message or 'invalid signature'}")
        except UnicodeDecodeError:
            return _refuse("payload is not UTF-8")
        try:
            event = StripeEvent.from_json(text)
        except EventPayloadError as error:
            log.warning("webhook: refused a signed payload: %s", error)
            return _refuse(f"not a Stripe event we can read: {error}")

        try:
            outcome = await run_in_threadpool(apply_webhook_event, warehouse, event, now=clock(), mirror_row=mirror_row)
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


async def _read_body(request: Request) -> bytes | JSONResponse:
    """The raw body, or the refusal of a body too large to read: never more than MAX_BODY_BYTES plus
    the chunk that crossed it is held."""
    lengths = request.headers.getlist("content-length")
    if len(lengths) > 1 or any(not (value.isascii() and value.isdigit()) for value in lengths):
        return _refuse("Content-Length is not one byte count", close=True)
    declared = int(lengths[0]) if lengths else None
    if declared is not None and declared > MAX_BODY_BYTES:
        return _too_large()
    limit = MAX_BODY_BYTES if declared is None else declared
    body = bytearray()
    try:
        async with aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    return _too_large() if declared is None else _refuse("body longer than its Content-Length", close=True)
    except ClientDisconnect:
        return _refuse("the client went away before the body was complete", close=True)
    return bytes(body)


def _too_large() -> JSONResponse:
    return _refuse(f"payload too large: a Stripe event is at most {MAX_BODY_BYTES:,} bytes", status=413, close=True)


def _refuse(reason: str, *, status: int = 400, close: bool = False) -> JSONResponse:
    """An error answer. `close`: the body was not read to its end, so the connection cannot carry
    another request — uvicorn closes it after the answer instead of reading the rest."""
    return JSONResponse({"error": reason}, status_code=status, headers={"Connection": "close"} if close else None)
