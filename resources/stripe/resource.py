"""`StripeResource`: the Dagster resource, its configuration, and the gateways it hands out."""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from aisyst_pipelines.settings import DEFAULT_METER_EVENT_NAME, EMULATOR_API_KEY, Settings

from .catalog import CatalogGateway
from .client import LIVE_MODE_REQUESTS_PER_SECOND, TEST_MODE_REQUESTS_PER_SECOND, StripeCalls, is_live_key
from .customers import CustomerGateway
from .events import EventGateway
from .invoices import InvoiceGateway
from .meters import MeterGateway
from .portal import PortalGateway


class StripeResource(dg.ConfigurableResource):
    """Stripe, one gateway per domain: `catalog`, `customers`, `meters`, `invoices`, `events`, `portal`
    (every call through the core of `client.py`: rate limit, retries, no secret in errors).

    Bind it with `StripeResource.from_settings(settings)`: the key comes from
    `dg.EnvVar("STRIPE_SECRET_KEY")`, or — with no key set — the emulator's test key and URL.
    """

    api_key: str
    api_base: str | None = None  # None = Stripe; the emulator's URL in local mode
    max_network_retries: int = 3  # retries of one request (ours, see client.py), at least 1
    retry_backoff_seconds: float = 0.5  # first retry delay (the SDK's); doubles per retry, at most 5 s
    requests_per_second: float | None = None  # None = 25/s for test keys, 100/s for live keys
    burst: int = 1  # requests that may go out back to back before the rate applies
    allow_live_mode: bool = False
    meter_event_name: str = DEFAULT_METER_EVENT_NAME
    timeout_seconds: float = 30.0

    _calls: StripeCalls | None = PrivateAttr(default=None)
    _calls_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

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
        return is_live_key(self.api_key)

    @property
    def effective_requests_per_second(self) -> float:
        if self.requests_per_second:
            return self.requests_per_second
        return LIVE_MODE_REQUESTS_PER_SECOND if self.is_live_mode else TEST_MODE_REQUESTS_PER_SECOND

    @property
    def catalog(self) -> CatalogGateway:
        return CatalogGateway(self._core(), self.meter_event_name)

    @property
    def customers(self) -> CustomerGateway:
        return CustomerGateway(self._core(), self.catalog)

    @property
    def meters(self) -> MeterGateway:
        return MeterGateway(self._core(), self.meter_event_name)

    @property
    def invoices(self) -> InvoiceGateway:
        return InvoiceGateway(self._core())

    @property
    def events(self) -> EventGateway:
        return EventGateway(self._core())

    @property
    def portal(self) -> PortalGateway:
        return PortalGateway(self._core())

    def _core(self) -> StripeCalls:
        with self._calls_lock:
            if self._calls is None:
                self._calls = StripeCalls(
                    api_key=self.api_key,
                    api_base=self.api_base,
                    requests_per_second=self.effective_requests_per_second,
                    burst=self.burst,
                    max_retries=self.max_network_retries,
                    first_retry_delay=self.retry_backoff_seconds,
                    timeout_seconds=self.timeout_seconds,
                    allow_live_mode=self.allow_live_mode,
                )
            return self._calls
