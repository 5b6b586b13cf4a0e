"""The one Stripe client of the project: every Stripe call goes through `StripeResource`.

What it guarantees, whoever calls it (DESIGN.md §2, §4; reference/STRIPE.md §7, §8):

- the SDK's pinned API version (never overridden) and `max_network_retries` > 0: the SDK retries
  connection errors, 409 and 5xx with the same idempotency key; we also retry 429 (the SDK only
  does when Stripe sends `Stripe-Should-Retry: true`);
- a client-side rate limit — a token bucket shared by every thread of the process, 25 requests/s
  for test keys and 100 for live keys by default — applied to each HTTP attempt, retries and
  next-page fetches included, so that a burst of work (thousands of drafts at month start) is
  spread out instead of answered with 429s;
- one meter event at a time per customer and meter (Stripe allows one concurrent call per
  customer per meter);
- live keys (`sk_live_`, `rk_live_`) are refused unless AISYST_ALLOW_LIVE_MODE=true;
- the key never appears in a log, a repr or an exception: Stripe errors are re-raised with any
  key-looking text scrubbed and without the underlying `requests` exception (which holds the
  request headers) in their chain.

Typed methods only, each returning the plain dataclasses of `stripe_records`. Other domains add
their methods in their own headed section below the core ones; keep each method small and let it
go through `_call` / `_list` so the guarantees above hold.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import dagster as dg
import stripe
from pydantic import PrivateAttr

from aisyst_pipelines.billing.invoice_lines import LINE_KIND_KEY, InvoiceBranding, InvoiceLine
from aisyst_pipelines.billing.tiers import (
    INCLUDED_MINUTES_KEY,
    OVERAGE_UNIT_AMOUNT_KEY,
    TIER_KEY,
    TIER_NAME_KEY,
    TaxRateSpec,
    Tier,
    TierCatalog,
)
from aisyst_pipelines.settings import DEFAULT_METER_EVENT_NAME, EMULATOR_API_KEY, Settings

from .stripe_records import (
    CatalogEntry,
    CatalogIds,
    MeterUsage,
    NewInvoiceLine,
    StripeCustomer,
    StripeInvoice,
    StripeMeter,
    StripePrice,
    StripeProduct,
    StripeSubscription,
)

T = TypeVar("T")

LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
TEST_MODE_REQUESTS_PER_SECOND = 25.0
LIVE_MODE_REQUESTS_PER_SECOND = 100.0
PAGE_SIZE = 100

# Anything that looks like a Stripe secret or restricted key, wherever it may be echoed.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk)_(?:test|live)_[0-9A-Za-z_]+")
_REDACTED = "[redacted key]"


class LiveModeRefused(RuntimeError):
    """A live-mode key was configured while AISYST_ALLOW_LIVE_MODE is not `true`."""


# --- core: rate limit, retries, secrets ------------------------------------------------------------


class TokenBucket:
    """A thread-safe token bucket: `acquire()` returns once a request may go out.

    A caller that finds no token reserves the next one (the balance goes negative) and sleeps
    outside the lock until it is due, so concurrent callers queue up at exactly `rate` per second
    instead of waking together.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError(f"rate {rate} must be positive")
        self.rate = rate
        self.capacity = max(1, burst)
        self._tokens = float(self.capacity)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take a token, waiting as long as needed; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


_BUCKETS: dict[tuple[str, str, float, int], TokenBucket] = {}
_CUSTOMER_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_bucket(api_base: str, api_key: str, rate: float, burst: int) -> TokenBucket:
    """The process-wide bucket of one Stripe account at one base URL (keyed by a hash of the key)."""
    key = (api_base, hashlib.sha256(api_key.encode()).hexdigest()[:16], rate, burst)
    with _REGISTRY_LOCK:
        bucket = _BUCKETS.get(key)
        if bucket is None:
            bucket = _BUCKETS[key] = TokenBucket(rate, burst)
        return bucket


def _customer_lock(api_base: str, event_name: str, customer_id: str) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _CUSTOMER_LOCKS.setdefault((api_base, event_name, customer_id), threading.Lock())


class _RateLimitedHttpClient(stripe.RequestsClient):
    """The SDK's requests-based client, with our bucket in front of every HTTP attempt."""

    def __init__(self, bucket: TokenBucket, timeout: float, backoff_seconds: float) -> None:
        super().__init__(timeout=timeout)
        self._bucket = bucket
        self._backoff_seconds = backoff_seconds

    def request(self, method, url, headers, post_data=None):  # type: ignore[no-untyped-def, override]
        self._bucket.acquire()
        return super().request(method, url, headers, post_data)

    def _should_retry(self, response, api_connection_error, num_retries, max_network_retries):  # type: ignore[no-untyped-def]
        # Stripe's 429s (rate limit, lock_timeout) are safe to retry: they are answered before the
        # idempotency layer. The SDK retries them only on `Stripe-Should-Retry: true`.
        if response is not None and response[1] == 429 and num_retries < (max_network_retries or 0):
            headers = response[2] or {}
            return headers.get("stripe-should-retry") != "false"
        return super()._should_retry(response, api_connection_error, num_retries, max_network_retries)

    def _sleep_time_seconds(self, num_retries: int) -> float:
        # The SDK's schedule (doubling, capped at 5 s, jittered to 50-100 %) from our first delay.
        delay = min(self._backoff_seconds * 2 ** (num_retries - 1), self.MAX_DELAY)
        return max(self._add_jitter_time(delay), self._backoff_seconds / 2)


def scrub(text: str | None, secret: str | None = None) -> str | None:
    """`text` without the secret and without anything shaped like a Stripe key."""
    if text is None:
        return None
    if secret:
        text = text.replace(secret, _REDACTED)
    return _KEY_PATTERN.sub(_REDACTED, text)


def _scrub_value(value: Any, secret: str | None) -> Any:
    if isinstance(value, str):
        return scrub(value, secret)
    if isinstance(value, dict):
        return {key: _scrub_value(item, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_value(item, secret) for item in value]
    return value


def scrubbed_error(error: stripe.StripeError, secret: str | None) -> stripe.StripeError:
    """The same error (same class, code, status, request id) with no key text and no chain.

    The chain is dropped on purpose: a connection error's cause is the `requests` exception,
    whose request object carries the Authorization header.
    """
    error._message = scrub(error._message, secret)
    error.http_body = scrub(error.http_body, secret)
    error.json_body = _scrub_value(error.json_body, secret)
    error.args = tuple(_scrub_value(arg, secret) if isinstance(arg, (str, dict, list)) else arg for arg in error.args)
    error.error = error._construct_error_object()
    error.__cause__ = None
    error.__context__ = None
    error.__suppress_context__ = True
    return error


class StripeResource(dg.ConfigurableResource):
    """Stripe, through stripe-python's `StripeClient` (see the module docstring for the guarantees).

    Bind it with `StripeResource.from_settings(settings)`: the key comes from
    `dg.EnvVar("STRIPE_SECRET_KEY")`, or — with no key set — the emulator's test key and URL.
    """

    api_key: str
    api_base: str | None = None  # None = Stripe; the emulator's URL in local mode
    max_network_retries: int = 3
    retry_backoff_seconds: float = 0.5  # first retry delay (the SDK's); doubles per retry, at most 5 s
    requests_per_second: float | None = None  # None = 25/s for test keys, 100/s for live keys
    burst: int = 1  # requests that may go out back to back before the rate applies
    allow_live_mode: bool = False
    meter_event_name: str = DEFAULT_METER_EVENT_NAME
    timeout_seconds: float = 30.0

    _client: stripe.StripeClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> "StripeResource":
        """The one place that decides between Stripe (key set) and the local emulator (no key)."""
        api_key: Any = EMULATOR_API_KEY if settings.stripe_uses_emulator else dg.EnvVar("STRIPE_SECRET_KEY")
        return cls(
            api_key=api_key,
            api_base=settings.stripe_api_base,
            requests_per_second=settings.stripe_requests_per_second,
            allow_live_mode=settings.allow_live_mode,
            meter_event_name=settings.meter_event_name,
        )

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # pydantic's repr (and str) would print the key.
        return [(name, "<secret>" if name == "api_key" else value) for name, value in super().__repr_args__()]

    @property
    def is_live_mode(self) -> bool:
        return self.api_key.startswith(LIVE_KEY_PREFIXES)

    @property
    def effective_requests_per_second(self) -> float:
        if self.requests_per_second:
            return self.requests_per_second
        return LIVE_MODE_REQUESTS_PER_SECOND if self.is_live_mode else TEST_MODE_REQUESTS_PER_SECOND

    @property
    def base_url(self) -> str:
        return (self.api_base or stripe.DEFAULT_API_BASE).rstrip("/")

    def _stripe(self) -> stripe.StripeClient:
        with self._client_lock:
            if self._client is None:
                if self.is_live_mode and not self.allow_live_mode:
                    raise LiveModeRefused(
                        "STRIPE_SECRET_KEY is a live-mode key (sk_live_…/rk_live_…); refusing to use it. "
                        "Set AISYST_ALLOW_LIVE_MODE=true to work against live Stripe."
                    )
                if self.max_network_retries < 1:
                    raise ValueError("max_network_retries must be at least 1")
                bucket = shared_bucket(self.base_url, self.api_key, self.effective_requests_per_second, self.burst)
                base_addresses = {"api": self.base_url, "meter_events": self.base_url} if self.api_base else None
                self._client = stripe.StripeClient(
                    self.api_key,
                    base_addresses=base_addresses,
                    max_network_retries=self.max_network_retries,
                    http_client=_RateLimitedHttpClient(bucket, self.timeout_seconds, self.retry_backoff_seconds),
                )
            return self._client

    def _call(self, operation: Callable[[stripe.StripeClient], T]) -> T:
        """Run one SDK operation; a Stripe error comes out scrubbed (see `scrubbed_error`)."""
        client = self._stripe()
        try:
            return operation(client)
        except stripe.StripeError as error:
            failure = scrubbed_error(error, self.api_key)
        raise failure  # outside the except block: nothing is chained to it

    def _list(self, operation: Callable[[stripe.StripeClient], Any], convert: Callable[[dict[str, Any]], T]) -> list[T]:
        """Every object of a list endpoint (all pages), converted while still inside `_call`."""
        return self._call(lambda client: [convert(item.to_dict()) for item in operation(client).auto_paging_iter()])

    # --- core: customers and subscriptions (sync) --------------------------------------------------

    def list_test_clocks(self) -> list[str]:
        """Ids of the account's test clocks (test mode only; live mode has none)."""
        if self.is_live_mode:
            return []
        return self._list(lambda c: c.v1.test_helpers.test_clocks.list({"limit": PAGE_SIZE}), lambda raw: raw["id"])

    def list_customers(self, test_clocks: Iterable[str] | None = None) -> list[StripeCustomer]:
        """All customers, those on test clocks included (Stripe lists those only per clock)."""
        clocks = self.list_test_clocks() if test_clocks is None else list(test_clocks)
        customers = self._list(lambda c: c.v1.customers.list({"limit": PAGE_SIZE}), StripeCustomer.from_api)
        for clock in clocks:
            customers += self._list(
                lambda c, clock=clock: c.v1.customers.list({"limit": PAGE_SIZE, "test_clock": clock}), StripeCustomer.from_api
            )
        return list({customer.id: customer for customer in customers}.values())  # each once, whatever the listing did

    def list_products(self) -> dict[str, StripeProduct]:
        """All products by id (the subscription sync joins items' prices on it)."""
        products = self._list(lambda c: c.v1.products.list({"limit": PAGE_SIZE}), StripeProduct.from_api)
        return {product.id: product for product in products}

    def list_subscriptions(self, test_clocks: Iterable[str] | None = None) -> list[StripeSubscription]:
        """Every subscription (status=all), with each item's price and product.

        The products are listed once per call and joined on, rather than expanded with
        `expand[]=data.items.data.price.product` (five levels; Stripe expands four at most).
        """
        clocks = self.list_test_clocks() if test_clocks is None else list(test_clocks)
        products = self.list_products()
        raw_subscriptions: list[dict[str, Any]] = []
        for clock in [None, *clocks]:
            params: dict[str, Any] = {"status": "all", "limit": PAGE_SIZE}
            if clock:
                params["test_clock"] = clock
            raw_subscriptions += self._list(lambda c, p=params: c.v1.subscriptions.list(p), lambda raw: raw)
        subscriptions = []
        for raw in {raw["id"]: raw for raw in raw_subscriptions}.values():
            embedded = raw.get("items") or {}
            items = embedded.get("data") or []
            if embedded.get("has_more"):
                items = self._list(
                    lambda c, sub=raw["id"]: c.v1.subscription_items.list({"subscription": sub, "limit": PAGE_SIZE}),
                    lambda item: item,
                )
            subscriptions.append(StripeSubscription.from_api(raw, items, products))
        return subscriptions

    # --- core: catalog bootstrap (aisyst bootstrap-stripe) ------------------------------------------

    def ensure_catalog(self, catalog: TierCatalog) -> CatalogIds:
        """Find or create every product, price, the meter and the tax rate of the tiers file.

        Idempotent: objects are found by the tier key in product metadata, the price lookup key,
        the meter's event name and the tax rate's name/percentage/inclusive — a second run creates
        nothing.
        """
        products = tuple(self.ensure_product(tier) for tier in catalog.tiers)
        prices = tuple(self.ensure_price(tier, product.id) for tier, product in zip(catalog.tiers, products))
        meter = self.ensure_meter(self.meter_event_name)
        tax_rate = self.ensure_tax_rate(catalog.tax_rate) if catalog.tax_rate else None
        return CatalogIds(products=products, prices=prices, meter=meter, tax_rate=tax_rate)

    def ensure_product(self, tier: Tier) -> CatalogEntry:
        metadata = _tier_metadata(tier)
        existing = next(
            (p for p in self.list_products().values() if p.metadata.get(TIER_KEY) == tier.key and p.active), None
        )
        if existing is not None:
            if any(existing.metadata.get(key) != value for key, value in metadata.items()):
                self._call(lambda c: c.v1.products.update(existing.id, {"metadata": metadata}))
            return CatalogEntry("product", existing.id, False, tier.name)
        created = self._call(lambda c: c.v1.products.create({"name": tier.name, "metadata": metadata}))
        return CatalogEntry("product", created.id, True, tier.name)

    def find_price_by_lookup_key(self, lookup_key: str) -> StripePrice | None:
        prices = self._list(
            lambda c: c.v1.prices.list({"lookup_keys": [lookup_key], "active": True, "limit": 10}), StripePrice.from_api
        )
        return prices[0] if prices else None

    def ensure_price(self, tier: Tier, product_id: str) -> CatalogEntry:
        """The tier's recurring price. A price's amount cannot change in Stripe: when the file's
        amount or interval differs, a new price takes over the lookup key (`transfer_lookup_key`)."""
        metadata = _tier_metadata(tier)
        label = f"{tier.name} {tier.unit_amount / 100:.2f} {tier.currency.upper()}/{tier.interval}"
        existing = self.find_price_by_lookup_key(tier.lookup_key)
        if existing is not None and _price_matches(existing, tier, product_id):
            if any(existing.metadata.get(key) != value for key, value in metadata.items()):
                self._call(lambda c: c.v1.prices.update(existing.id, {"metadata": metadata}))
            return CatalogEntry("price", existing.id, False, label)
        params: dict[str, Any] = {
            "product": product_id,
            "currency": tier.currency,
            "unit_amount": tier.unit_amount,
            "recurring": {"interval": tier.interval, "interval_count": tier.interval_count},
            "lookup_key": tier.lookup_key,
            "nickname": tier.name,
            "metadata": metadata,
        }
        if existing is not None:
            params["transfer_lookup_key"] = True
        created = self._call(lambda c: c.v1.prices.create(params))
        return CatalogEntry("price", created.id, True, label)

    def find_meter(self, event_name: str | None = None) -> StripeMeter | None:
        """The meter of an event name (default: ours), active or not."""
        wanted = event_name or self.meter_event_name
        meters = self._list(lambda c: c.v1.billing.meters.list({"limit": PAGE_SIZE}), StripeMeter.from_api)
        return next((meter for meter in meters if meter.event_name == wanted), None)

    def ensure_meter(self, event_name: str) -> CatalogEntry:
        """The voice-minutes meter: sum of `value`, customer in `stripe_customer_id` (reactivated if
        it was deactivated: an event name belongs to one meter for good)."""
        existing = self.find_meter(event_name)
        if existing is not None:
            if existing.status != "active":
                self._call(lambda c: c.v1.billing.meters.reactivate(existing.id))
            return CatalogEntry("meter", existing.id, False, event_name)
        created = self._call(
            lambda c: c.v1.billing.meters.create(
                {
                    "display_name": "Voice call minutes",
                    "event_name": event_name,
                    "default_aggregation": {"formula": "sum"},
                    "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                    "value_settings": {"event_payload_key": "value"},
                }
            )
        )
        return CatalogEntry("meter", created.id, True, event_name)

    def ensure_tax_rate(self, spec: TaxRateSpec) -> CatalogEntry:
        label = f"{spec.display_name} {spec.percentage}% {'inclusive' if spec.inclusive else 'exclusive'}"
        rates = self._list(lambda c: c.v1.tax_rates.list({"active": True, "limit": PAGE_SIZE}), lambda raw: raw)
        for rate in rates:
            if (
                rate.get("display_name") == spec.display_name
                and Decimal(str(rate.get("percentage"))) == spec.percentage
                and bool(rate.get("inclusive")) == spec.inclusive
                and rate.get("jurisdiction") == spec.jurisdiction
            ):
                return CatalogEntry("tax_rate", rate["id"], False, label)
        params: dict[str, Any] = {
            "display_name": spec.display_name,
            "percentage": str(spec.percentage),
            "inclusive": spec.inclusive,
        }
        for key in ("country", "jurisdiction", "description"):
            if getattr(spec, key):
                params[key] = getattr(spec, key)
        created = self._call(lambda c: c.v1.tax_rates.create(params))
        return CatalogEntry("tax_rate", created.id, True, label)

    # --- core: meter events and summaries ----------------------------------------------------------

    def create_meter_event(
        self, customer_id: str, value: int, timestamp: datetime, identifier: str, idempotency_key: str | None = None
    ) -> str:
        """Report `value` minutes for a customer at `timestamp`, one call at a time per customer.

        `identifier` makes the event unique for Stripe's ≥ 24 h dedupe window; the POST's
        idempotency key (reused on retries) is derived from it too, unless `idempotency_key` names
        a separate delivery attempt (the voice-server simulation's late duplicates).
        """
        params = {
            "event_name": self.meter_event_name,
            "payload": {"stripe_customer_id": customer_id, "value": str(int(value))},
            "identifier": identifier,
            "timestamp": int(timestamp.timestamp()),
        }
        with _customer_lock(self.base_url, self.meter_event_name, customer_id):
            key = idempotency_key or f"meter-event-{identifier}"
            self._call(lambda c: c.v1.billing.meter_events.create(params, {"idempotency_key": key}))
        return identifier

    def meter_event_summaries(
        self, meter_id: str, customer_id: str, start: datetime, end: datetime, group_by_day: bool = False
    ) -> list[MeterUsage]:
        """The meter's usage for a customer over [start, end) (minute-aligned), oldest first;
        one summary for the whole range, or one per UTC day (start and end must be midnights)."""
        params: dict[str, Any] = {
            "customer": customer_id,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
            "limit": PAGE_SIZE,
        }
        if group_by_day:
            params["value_grouping_window"] = "day"
        summaries = self._list(lambda c: c.v1.billing.meters.event_summaries.list(meter_id, params), MeterUsage.from_api)
        return sorted(summaries, key=lambda summary: summary.start)

    # --- core: invoices and customer invoice settings ------------------------------------------------

    def retrieve_invoice(self, invoice_id: str) -> StripeInvoice:
        return StripeInvoice.from_api(self._call(lambda c: c.v1.invoices.retrieve(invoice_id)).to_dict())

    def list_invoices(
        self,
        *,
        status: str | None = None,
        customer_id: str | None = None,
        subscription_id: str | None = None,
        created_gte: datetime | None = None,
    ) -> list[StripeInvoice]:
        """Invoices matching every filter given, newest first (Stripe's order), all pages."""
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if status:
            params["status"] = status
        if customer_id:
            params["customer"] = customer_id
        if subscription_id:
            params["subscription"] = subscription_id
        if created_gte is not None:
            params["created"] = {"gte": int(created_gte.timestamp())}
        return self._list(lambda c: c.v1.invoices.list(params), StripeInvoice.from_api)

    def add_invoice_lines(
        self,
        invoice_id: str,
        lines: Sequence[NewInvoiceLine],
        invoice_metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeInvoice:
        """All lines in ONE `add_lines` call (draft invoices only), with the caller's idempotency key."""
        params = {"lines": [_line_params(line) for line in lines], "invoice_metadata": dict(invoice_metadata)}
        invoice = self._call(lambda c: c.v1.invoices.add_lines(invoice_id, params, {"idempotency_key": idempotency_key}))
        return StripeInvoice.from_api(invoice.to_dict())

    def update_customer_invoice_settings(
        self,
        customer_id: str,
        custom_fields: Sequence[tuple[str, str]] | None = None,
        footer: str | None = None,
    ) -> None:
        """Set the customer's invoice custom fields (≤ 4; name ≤ 40, value ≤ 140 chars) and/or footer."""
        settings: dict[str, Any] = {}
        if custom_fields is not None:
            settings["custom_fields"] = [{"name": name, "value": value} for name, value in custom_fields] or ""
        if footer is not None:
            settings["footer"] = footer
        if settings:
            self._call(lambda c: c.v1.customers.update(customer_id, {"invoice_settings": settings}))

    def create_portal_session(self, customer_id: str, return_url: str) -> str:
        """A billing-portal session URL for the customer (short-lived; create one per visit)."""
        session = self._call(
            lambda c: c.v1.billing_portal.sessions.create({"customer": customer_id, "return_url": return_url})
        )
        return session.url


    # --- invoice annotation -------------------------------------------------------------------------
    # The draft_invoice_sensor pages the invoice list itself (one page per call, so a tick can stop
    # at its time budget and continue from its cursor); the annotation job writes ONE add_lines per
    # invoice and reads an invoice back only when a previous attempt may have written. Stripe's
    # answers that decide what happens next are turned into the exceptions below the class.

    def list_invoices_page(
        self,
        *,
        created_gte: int | None = None,
        status: str | None = None,
        starting_after: str | None = None,
        limit: int = PAGE_SIZE,
    ) -> "InvoicePage":
        """One page of `GET /v1/invoices` (newest first), with whether each invoice carries brand fields."""
        params: dict[str, Any] = {"limit": limit}
        if created_gte is not None:
            params["created"] = {"gte": int(created_gte)}
        if status:
            params["status"] = status
        if starting_after:
            params["starting_after"] = starting_after
        try:
            # A raw request (same client: rate limit, retries, errors): turning 100 invoices into
            # StripeObjects costs ~5x the HTTP round trip in CPU, and the sensor only reads a few fields.
            page = self._call(lambda c: c.raw_request("get", "/v1/invoices", **params)).data
        except stripe.InvalidRequestError as error:
            if starting_after and error.param == "starting_after":
                raise StaleListCursor(starting_after) from None
            raise
        invoices = [ListedInvoice(StripeInvoice.from_api(raw), branded=_carries_brand_fields(raw)) for raw in page["data"]]
        return InvoicePage(invoices=invoices, has_more=bool(page["has_more"]))

    def invoice_if_exists(self, invoice_id: str) -> StripeInvoice | None:
        """The invoice as Stripe has it now, or None when it was deleted (a deleted draft is gone)."""
        try:
            return self.retrieve_invoice(invoice_id)
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return None
            raise

    def add_annotation_lines(
        self, invoice_id: str, lines: Sequence[InvoiceLine], invoice_metadata: Mapping[str, str], idempotency_key: str
    ) -> None:
        """Our usage lines (each tagged with its kind in line metadata) and the invoice metadata in one
        `add_lines` call. Raises InvoiceNotEditable (finalized), InvoiceGone (deleted) or
        AnnotationWriteConflict (the key was used with other parameters)."""
        new_lines = [
            NewInvoiceLine(
                description=line.description,
                amount=line.amount,
                period_start=line.period_start,
                period_end=line.period_end,
                metadata={LINE_KIND_KEY: line.kind.value},
            )
            for line in lines
        ]
        with _draft_write(invoice_id):
            self.add_invoice_lines(invoice_id, new_lines, invoice_metadata, idempotency_key)

    def write_invoice_metadata(self, invoice_id: str, metadata: Mapping[str, str]) -> None:
        """Merge keys into an invoice's metadata (allowed on finalized invoices too)."""
        self._call(lambda c: c.v1.invoices.update(invoice_id, {"metadata": dict(metadata)}))

    def write_invoice_branding(self, invoice_id: str, branding: InvoiceBranding) -> None:
        """Brand fields on one draft invoice: only for a draft whose subscription was not branded yet."""
        with _draft_write(invoice_id):
            self._call(lambda c: c.v1.invoices.update(invoice_id, _branding_params(branding)))

    def finalize_invoice(self, invoice_id: str) -> None:
        self._call(lambda c: c.v1.invoices.finalize_invoice(invoice_id, {"auto_advance": True}))

    def set_subscription_invoice_branding(self, subscription_id: str, branding: InvoiceBranding) -> None:
        """Brand fields on the subscription's invoice settings: every invoice it creates carries them."""
        self._call(lambda c: c.v1.subscriptions.update(subscription_id, {"invoice_settings": _branding_params(branding)}))

    def annotation_lines(self, invoice_id: str) -> list[tuple[str, str, int]]:
        """(kind, description, amount) of our lines on an invoice, all pages — to count them."""
        return [
            line
            for line in self._list(
                lambda c: c.v1.invoices.line_items.list(invoice_id, {"limit": PAGE_SIZE}), _annotation_line
            )
            if line is not None
        ]

    # --- stripe events --------------------------------------------------------------------------------
    # stripe_events_sensor reads the Events API one page per call, so that a tick can stop after a
    # bounded number of events and continue from its cursor. Events come back as plain dicts: the
    # sensor and the webhook receiver hand the same JSON shape to the same handler.

    def list_events_page(
        self,
        types: Sequence[str],
        *,
        ending_before: str | None = None,
        starting_after: str | None = None,
        created_gte: int | None = None,
        limit: int = PAGE_SIZE,
    ) -> "EventPage":
        """One page of `GET /v1/events` of these types (≤ 20 names), newest first as Stripe lists them.

        `ending_before=evt` gives the events just newer than `evt` (the ones to apply next);
        `starting_after=evt` the ones just older. Raises EventCursorGone when Stripe no longer lists
        the event named as cursor (30-day retention)."""
        params: dict[str, Any] = {"types": list(types), "limit": limit}
        if ending_before:
            params["ending_before"] = ending_before
        if starting_after:
            params["starting_after"] = starting_after
        if created_gte is not None:
            params["created"] = {"gte": int(created_gte)}
        try:
            # The JSON as sent, not StripeObjects: converting a page of 100 events (each with its whole
            # invoice or subscription) into StripeObjects and back cost more CPU than the rest of a tick.
            page = self._call(lambda c: c.raw_request("get", "/v1/events", **params).data)
        except stripe.InvalidRequestError as error:
            if error.code == "resource_missing" and error.param in ("ending_before", "starting_after"):
                raise EventCursorGone(ending_before or starting_after or "") from None
            raise
        return EventPage(events=list(page["data"]), has_more=bool(page["has_more"]))

    # --- reconciliation -------------------------------------------------------------------------------
    # The nightly reconciliation reads summaries through the core `meter_event_summaries` and sends
    # corrective meter events through `send_meter_correction`, which turns Stripe's answer into
    # what the corrections ledger must record (see CorrectionSend below the class).

    def meter_id(self) -> str:
        """Our meter's id (found by event name); MeterNotFound until `aisyst bootstrap-stripe` ran."""
        meter = self.find_meter()
        if meter is None:
            raise MeterNotFound(f"no Stripe meter for event name {self.meter_event_name!r}: run `aisyst bootstrap-stripe`")
        return meter.id

    def send_meter_correction(self, customer_id: str, value: int, timestamp: datetime, identifier: str) -> "CorrectionSend":
        """Send one corrective meter event; never raises for what Stripe answers about it.

        `sent`: accepted. `already_received`: Stripe still holds the identifier (an earlier attempt
        got through), which counts as sent. `rejected`: refused for good (validation), it never
        counted. `uncertain`: the attempt may or may not have arrived (network, 5xx, 429 after the
        retries): the ledger row stays pending and is re-sent under the same identifier.
        """
        try:
            self.create_meter_event(customer_id, value, timestamp, identifier)
        except stripe.InvalidRequestError as error:
            if error.code == "resource_already_exists" or "already exists with identifier" in (error.user_message or ""):
                return CorrectionSend("already_received", error.user_message)
            return CorrectionSend("rejected", error.user_message or str(error))
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as error:
            return CorrectionSend("uncertain", f"{type(error).__name__}: {error.user_message or error}")
        return CorrectionSend("sent", None)

    # --- usage alerts ---------------------------------------------------------------------------------
    # The alert e-mail links to a customer-portal session (create_portal_session, above). Customers on
    # a test clock live at the clock's time: their "days left in the period" is counted from it.

    def test_clock_times(self, clock_ids: Iterable[str]) -> dict[str, datetime]:
        """The frozen time of each test clock (test mode only; a clock that no longer exists is left out)."""
        from .stripe_records import utc_from_unix

        times: dict[str, datetime] = {}
        for clock_id in sorted(set(clock_ids)):
            try:
                clock = self._call(lambda c, clock_id=clock_id: c.v1.test_helpers.test_clocks.retrieve(clock_id))
            except stripe.InvalidRequestError as error:
                if error.code == "resource_missing":
                    continue
                raise
            frozen = utc_from_unix(clock.frozen_time)
            if frozen is not None:
                times[clock_id] = frozen
        return times


def _tier_metadata(tier: Tier) -> dict[str, str]:
    metadata = {TIER_KEY: tier.key, TIER_NAME_KEY: tier.name, INCLUDED_MINUTES_KEY: tier.included_minutes_text()}
    if tier.overage_unit_amount is not None:
        metadata[OVERAGE_UNIT_AMOUNT_KEY] = str(tier.overage_unit_amount)
    return metadata


def _price_matches(price: StripePrice, tier: Tier, product_id: str) -> bool:
    return (
        price.product_id == product_id
        and price.unit_amount == tier.unit_amount
        and price.currency == tier.currency
        and price.interval == tier.interval
        and (price.interval_count or 1) == tier.interval_count
    )


def _line_params(line: NewInvoiceLine) -> dict[str, Any]:
    params: dict[str, Any] = {"description": line.description, "amount": int(line.amount)}
    if line.period_start is not None and line.period_end is not None:
        # Stripe's line period is inclusive at both ends; ours is [start, end).
        inclusive_end = line.period_end - timedelta(seconds=1)
        params["period"] = {"start": int(line.period_start.timestamp()), "end": int(inclusive_end.timestamp())}
    if line.metadata:
        params["metadata"] = dict(line.metadata)
    if line.tax_rates:
        params["tax_rates"] = list(line.tax_rates)
    return params



# --- invoice annotation ------------------------------------------------------------------------------


class InvoiceNotEditable(RuntimeError):
    """The invoice is no longer a draft: lines cannot be added any more."""

    def __init__(self, invoice_id: str, status: str | None) -> None:
        super().__init__(f"invoice {invoice_id} is not a draft ({status or 'finalized'})")
        self.invoice_id = invoice_id
        self.status = status


class InvoiceGone(RuntimeError):
    """The invoice does not exist (a deleted draft)."""


class StaleListCursor(RuntimeError):
    """The invoice a list page was to continue after no longer matches the listing (deleted)."""


class AnnotationWriteConflict(RuntimeError):
    """Stripe holds another request under this idempotency key, with other parameters."""


@dataclass(frozen=True)
class ListedInvoice:
    invoice: StripeInvoice
    branded: bool  # carries custom fields and a footer (from the subscription's invoice settings)

    @property
    def id(self) -> str:
        return self.invoice.id


@dataclass(frozen=True)
class InvoicePage:
    invoices: list[ListedInvoice]
    has_more: bool


@contextmanager
def _draft_write(invoice_id: str) -> Iterator[None]:
    """Stripe's answers to a write on a draft that decide what the annotation does next."""
    try:
        yield
    except stripe.IdempotencyError:
        raise AnnotationWriteConflict(invoice_id) from None
    except stripe.InvalidRequestError as error:
        if error.http_status == 404:
            raise InvoiceGone(invoice_id) from None
        if error.code == "invoice_not_editable":
            raise InvoiceNotEditable(invoice_id, None) from None
        raise


def transient_stripe_error(error: BaseException) -> bool:
    """A failure worth another attempt later (connection, 429, 409, 5xx), as opposed to an answer."""
    return isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError))


def _carries_brand_fields(raw: Mapping[str, Any]) -> bool:
    return bool(raw.get("custom_fields")) and bool(raw.get("footer"))


def _branding_params(branding: InvoiceBranding) -> dict[str, Any]:
    return {
        "custom_fields": [{"name": field.name, "value": field.value} for field in branding.custom_fields] or "",
        "description": branding.memo,
        "footer": branding.footer,
    }


def _annotation_line(raw: Mapping[str, Any]) -> tuple[str, str, int] | None:
    kind = (raw.get("metadata") or {}).get(LINE_KIND_KEY)
    return (kind, raw.get("description") or "", int(raw.get("amount") or 0)) if kind else None


# --- stripe events -----------------------------------------------------------------------------------


class EventCursorGone(RuntimeError):
    """Stripe no longer lists the event used as a list cursor (older than its 30-day retention)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"Stripe no longer lists event {event_id}")
        self.event_id = event_id


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]  # newest first, each the event's JSON as Stripe sends it
    has_more: bool


# --- reconciliation ------------------------------------------------------------------------------------


class MeterNotFound(RuntimeError):
    """Stripe has no meter for our event name."""


@dataclass(frozen=True)
class CorrectionSend:
    """What became of one corrective meter event: sent, already_received, rejected or uncertain."""

    outcome: str
    message: str | None

    @property
    def counted(self) -> bool:
        """Stripe has the event (now or from an earlier attempt)."""
        return self.outcome in ("sent", "already_received")
