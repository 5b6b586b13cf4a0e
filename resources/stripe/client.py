"""The core every Stripe call goes through: one `StripeClient` and what each call gets from it.

- the SDK's pinned API version, a request timeout, and live keys (`sk_live_`, `rk_live_`) refused
  unless AISYST_ALLOW_LIVE_MODE=true;
- a client-side rate limit: a token bucket shared by every thread of the process (per account and
  base URL), 25 requests/s for test keys and 100 for live keys by default, taken before each HTTP
  request the SDK sends — retries and next-page fetches included — so that a burst of work
  (thousands of drafts at month start) is spread out instead of answered with 429s;
- retries of our own, decided on the SDK's public error facts (reference/STRIPE.md §7, §8.4). The
  SDK's `max_network_retries` stays at 0: it does not retry a 429 that comes without
  `Stripe-Should-Retry: true`, and its backoff is one process-wide constant. Every write carries an
  idempotency key chosen before its first attempt, so a write whose answer was lost is replayed by
  Stripe on the retry, not done twice;
- no secret in any error: a Stripe error comes out as a new error of the same class built from
  scrubbed parts, with nothing chained (a connection error's cause is the `requests` exception,
  whose request carries the Authorization header).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import stripe

T = TypeVar("T")

LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
TEST_MODE_REQUESTS_PER_SECOND = 25.0
LIVE_MODE_REQUESTS_PER_SECOND = 100.0
PAGE_SIZE = 100
MAX_RETRY_DELAY_SECONDS = 5.0  # the SDK's own cap

# Anything that looks like a Stripe secret or restricted key, wherever it may be echoed.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk)_(?:test|live)_[0-9A-Za-z_]+")
_REDACTED = "[redacted key]"

log = logging.getLogger(__name__)


class LiveModeRefused(RuntimeError):
    """A live-mode key was configured while AISYST_ALLOW_LIVE_MODE is not `true`."""


def is_live_key(api_key: str) -> bool:
    return api_key.startswith(LIVE_KEY_PREFIXES)


# --- rate limit ----------------------------------------------------------------------------------


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

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


_BUCKETS: dict[tuple[str, str, float, int], TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def shared_bucket(api_base: str, api_key: str, rate: float, burst: int) -> TokenBucket:
    """The process-wide bucket of one Stripe account at one base URL (keyed by a hash of the key)."""
    key = (api_base, hashlib.sha256(api_key.encode()).hexdigest()[:16], rate, burst)
    with _BUCKETS_LOCK:
        return _BUCKETS.setdefault(key, TokenBucket(rate, burst))


class _PacedHttpClient(stripe.RequestsClient):
    """The SDK's requests-based client with our bucket in front of every HTTP request.

    `request` is the method of the SDK's HTTPClient interface that custom clients implement; the
    SDK calls it once per HTTP request (tests/stripe_sync pins that with the rate-limit test)."""

    def __init__(self, bucket: TokenBucket, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._bucket = bucket

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        self._bucket.acquire()
        return super().request(method, url, headers, post_data)


# --- retries --------------------------------------------------------------------------------------


def retry_advised(error: stripe.StripeError) -> bool:
    """Whether the same request may succeed if sent again, from the SDK's public error facts.

    Stripe's `Stripe-Should-Retry` header decides when present. Otherwise: connection errors the SDK
    marks retryable (timeouts, refused or dropped connections), every 429 (rate limit or
    lock_timeout: answered before Stripe's idempotency layer, so nothing happened), 409 (a concurrent
    request under the same idempotency key) and 5xx."""
    advice = {name.lower(): value for name, value in (error.headers or {}).items()}.get("stripe-should-retry")
    if advice in ("true", "false"):
        return advice == "true"
    if isinstance(error, stripe.APIConnectionError):
        return error.should_retry
    if isinstance(error, stripe.RateLimitError):
        return True
    status = error.http_status or 0
    return status == 409 or status >= 500


def backoff_seconds(first_delay: float, retry: int) -> float:
    """The SDK's schedule from our first delay: doubling per retry, at most 5 s, jittered to 50–100 %."""
    return min(first_delay * 2 ** (retry - 1), MAX_RETRY_DELAY_SECONDS) * random.uniform(0.5, 1.0)


# What a read raises when Stripe answered 429 to it and to every retry: the account's request budget is
# spent by other work (a month-start burst of writes). Named here so that the services that pause on
# it (the two Stripe sensors) need not import the SDK.
StripeRateLimited = stripe.RateLimitError


def transient_stripe_error(error: BaseException) -> bool:
    """A failure worth another attempt later (connection, 429, 409, 5xx), as opposed to an answer."""
    return isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError))


# --- secrets --------------------------------------------------------------------------------------


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
    """A new error of the same class (same code, status, param, headers, so the same request id)
    whose message and bodies hold no key text; built with the SDK's public constructors."""
    extra: dict[str, Any] = {}
    if isinstance(error, (stripe.InvalidRequestError, stripe.CardError)):
        extra["param"] = error.param
    if isinstance(error, stripe.APIConnectionError):
        extra["should_retry"] = error.should_retry
    return type(error)(
        scrub(error.user_message, secret),
        http_body=scrub(error.http_body, secret),
        http_status=error.http_status,
        json_body=_scrub_value(error.json_body, secret),
        headers=error.headers,
        code=error.code,
        **extra,
    )


def unreachable(error: stripe.APIConnectionError, base_url: str) -> stripe.APIConnectionError:
    """The same error with one line saying where Stripe could not be reached and why, instead of the
    SDK's "let us know at support@stripe.com" (a refused local emulator is not Stripe support's)."""
    found = re.search(r"Network error: ([^\n]*?)\)?$", error.user_message or "", re.MULTILINE)
    cause = found.group(1) if found else (error.user_message or "no answer").strip().splitlines()[-1]
    hint = "" if base_url == stripe.DEFAULT_API_BASE else " (is the Stripe emulator running? `aisyst dev` or `aisyst emulator` start it)"
    return stripe.APIConnectionError(f"Stripe is not reachable at {base_url}: {cause}{hint}", should_retry=error.should_retry)


# --- the core -------------------------------------------------------------------------------------


class StripeCalls:
    """The client and the guarantees above; the gateways make every call through `read`/`write`."""

    def __init__(
        self,
        *,
        api_key: str,
        api_base: str | None,
        requests_per_second: float,
        burst: int,
        max_retries: int,
        first_retry_delay: float,
        timeout_seconds: float,
        allow_live_mode: bool,
    ) -> None:
        self.is_live_mode = is_live_key(api_key)
        if self.is_live_mode and not allow_live_mode:
            raise LiveModeRefused(
                "STRIPE_SECRET_KEY is a live-mode key (sk_live_…/rk_live_…); refusing to use it. "
                "Set AISYST_ALLOW_LIVE_MODE=true to work against live Stripe."
            )
        if max_retries < 1:
            raise ValueError("max_network_retries must be at least 1")
        self.api_key = api_key
        self.base_url = (api_base or stripe.DEFAULT_API_BASE).rstrip("/")
        self._max_retries = max_retries
        self._first_retry_delay = first_retry_delay
        bucket = shared_bucket(self.base_url, api_key, requests_per_second, burst)
        self.client = stripe.StripeClient(
            api_key,
            # Another base is the emulator's: it serves the meter-events host too.
            base_addresses={"api": self.base_url, "meter_events": self.base_url} if api_base else None,
            max_network_retries=0,  # ours, below
            http_client=_PacedHttpClient(bucket, timeout_seconds),
        )

    def read(self, operation: Callable[[stripe.StripeClient], T]) -> T:
        """A GET (or a whole listing, its pages included: a retry starts the listing again)."""
        return self._with_retries(lambda: operation(self.client))

    def write(
        self, operation: Callable[[stripe.StripeClient, stripe.RequestOptions], T], idempotency_key: str | None = None
    ) -> T:
        """A POST, every attempt under one idempotency key (the caller's, or one chosen now)."""
        options: stripe.RequestOptions = {"idempotency_key": idempotency_key or str(uuid.uuid4())}
        return self._with_retries(lambda: operation(self.client, options))

    def get_json(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """A GET whose answer stays plain JSON, for pages where building StripeObjects would cost more
        CPU than the request (`raw_request`: same client, so same rate limit, retries and errors)."""
        return self.read(lambda client: cast(dict[str, Any], client.raw_request("get", path, **params).data))

    def post_json(self, path: str, params: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """`write` for a POST whose answer stays plain JSON (as `get_json`). Callers build `params` as
        the SDK's TypedDict of the endpoint, so that the type checker still reads the parameter names."""
        return self.write(
            lambda client, options: cast(dict[str, Any], client.raw_request("post", path, **params, **options).data),
            idempotency_key=idempotency_key,
        )

    def list_all(
        self, operation: Callable[[stripe.StripeClient], stripe.ListObject[Any]], convert: Callable[[dict[str, Any]], T]
    ) -> list[T]:
        """Every object of a list endpoint (all pages), each converted from its plain dict."""
        return self.read(lambda client: [convert(item.to_dict()) for item in operation(client).auto_paging_iter()])

    def _with_retries(self, attempt: Callable[[], T]) -> T:
        retries = 0
        while True:
            try:
                return attempt()
            except stripe.StripeError as error:
                if retries >= self._max_retries or not retry_advised(error):
                    failure = scrubbed_error(error, self.api_key)
                else:
                    failure = None
                    retries += 1
                    log.info("Stripe answered %s (HTTP %s); retry %d", type(error).__name__, error.http_status, retries)
            if failure is not None:
                if isinstance(failure, stripe.APIConnectionError):
                    failure = unreachable(failure, self.base_url)
                raise failure  # outside the except block: nothing is chained to it
            time.sleep(backoff_seconds(self._first_retry_delay, retries))
