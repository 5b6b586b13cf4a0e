"""StripeResource against the emulator over HTTP: rate limit, retries, meter-event serialisation,
the gateways' calls, live-key refusal, and no secret in any error (the real stripe SDK, never a
mocked client)."""

import threading
import traceback
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import stripe

from aisyst_pipelines.billing.invoice_lines import CustomField, InvoiceBranding, InvoiceLine, LineKind
from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.settings import Settings
from resources.stripe import AnnotationWriteConflict, InvoiceGone, InvoiceNotEditable, LiveModeRefused, StripeResource
from resources.stripe.client import retry_advised, scrubbed_error
# Built at run time so that no key-shaped literal sits in the repository.
SECRET_TAIL = "Zq" + "7x" * 12
FAKE_LIVE_KEY = "sk_" + "live_" + SECRET_TAIL


def run_in_threads(count: int, work) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def arrival_times(stripe_emulator, path: str) -> list[float]:
    return sorted(entry["at"] for entry in stripe_emulator.requests(path=path))


def test_the_rate_limiter_spaces_requests_of_all_threads_and_instances(stripe_emulator) -> None:
    # Two resource instances (as two Dagster steps in one process would have) with four threads
    # between them share one bucket: 24 requests at 10/s need at least 2.3 s on the server's clock.
    def resource() -> StripeResource:
        return StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=10)

    instances = [resource(), resource()]
    run_in_threads(4, lambda index: [instances[index % 2].catalog.products() for _ in range(6)])
    times = arrival_times(stripe_emulator, "/v1/products")
    assert len(times) == 24
    # Lower bound only: a loaded machine can stretch the span, never shrink it below the pacing
    # (minus how late the very first request may have arrived).
    assert times[-1] - times[0] >= 23 / 10 - 0.5


def test_test_keys_default_to_25_per_second_and_live_keys_to_100() -> None:
    assert StripeResource(api_key="sk_test_x").effective_requests_per_second == 25
    assert StripeResource(api_key=FAKE_LIVE_KEY, allow_live_mode=True).effective_requests_per_second == 100
    assert StripeResource(api_key="sk_test_x", requests_per_second=7).effective_requests_per_second == 7


# --- retries: on the SDK's public error facts, with one idempotency key per write -------------------


def retrying(stripe_emulator, retries: int = 8) -> StripeResource:
    return StripeResource(
        api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=100,
        max_network_retries=retries, retry_backoff_seconds=0.05,
    )


def test_5xx_answers_are_retried_with_the_same_idempotency_key(stripe_emulator) -> None:
    customer = stripe_emulator.client().v1.customers.create({"name": "Retry Ltd"})
    stripe_emulator.set_faults(error_rate=0.5)
    resource = retrying(stripe_emulator)
    for _ in range(6):
        assert resource.portal.session_url(customer.id, "https://aisyst.example/account").startswith("http")
    log = stripe_emulator.requests(path="/v1/billing_portal/sessions", method="POST")
    failed = [entry for entry in log if entry["status"] == 500]
    assert failed, "the seeded fault injector answered no 500 at all"
    succeeded_keys = [entry["idempotency_key"] for entry in log if entry["status"] == 200]
    assert len(set(succeeded_keys)) == 6  # six writes, one key each
    assert {entry["idempotency_key"] for entry in failed} <= set(succeeded_keys)  # each retry reused its key


def test_429_answers_are_retried_even_without_stripe_should_retry(stripe_emulator) -> None:
    # The SDK alone retries a 429 only on `Stripe-Should-Retry: true`; Stripe answers 429s before
    # its idempotency layer, so nothing happened and the request can go again.
    stripe_emulator.set_faults(rate_limit_error_rate=0.4, rate_limit_should_retry=False)
    resource = retrying(stripe_emulator)
    for _ in range(5):
        assert resource.catalog.products() == {}
    log = stripe_emulator.requests(path="/v1/products")
    assert any(entry["status"] == 429 for entry in log)
    assert sum(entry["status"] == 200 for entry in log) == 5


def test_a_burst_over_the_servers_rate_limit_is_retried_until_it_gets_through(stripe_emulator) -> None:
    # Our pacing allows 100/s, the server 3 per rolling second: the 429s it answers are retried.
    customer = stripe_emulator.client().v1.customers.create({"name": "Burst Co"})
    stripe_emulator.set_faults(rps_limit=3)
    resource = StripeResource(
        api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=100, burst=10,
        max_network_retries=10, retry_backoff_seconds=0.2,
    )
    run_in_threads(8, lambda index: resource.invoices.list_page(limit=1))
    run_in_threads(4, lambda index: resource.portal.session_url(customer.id, "https://aisyst.example/account"))
    log = stripe_emulator.requests()
    assert any(entry["outcome"] == "rps_limit" for entry in log)
    assert sum(entry["status"] == 200 for entry in log if entry["path"] == "/v1/invoices") == 8
    assert sum(entry["status"] == 200 for entry in log if entry["path"] == "/v1/billing_portal/sessions") == 4


def test_dropped_connections_are_retried_and_replayed_not_done_twice(stripe_emulator) -> None:
    stripe_emulator.set_faults(drop_rate=0.3)
    retrying(stripe_emulator).catalog.ensure(load_tier_catalog())
    outcomes = [entry["outcome"] for entry in stripe_emulator.requests()]
    assert "drop" in outcomes and "replay" in outcomes  # a lost answer, then the same key replayed
    objects = stripe_emulator.dump()["objects"]
    assert (len(objects["product"]), len(objects["price"]), len(objects["billing.meter"]), len(objects["tax_rate"])) == (3, 3, 1, 1)


def test_retries_stop_after_max_network_retries_and_the_sdk_adds_none_of_its_own(stripe_emulator) -> None:
    stripe_emulator.set_faults(error_rate=1.0)
    with pytest.raises(stripe.APIError) as failure:
        retrying(stripe_emulator, retries=2).catalog.products()
    assert failure.value.http_status == 500
    assert len(stripe_emulator.requests(path="/v1/products")) == 3  # the first try and our two retries


def test_answers_are_not_retried_and_stripe_should_retry_decides_when_sent() -> None:
    not_found = stripe.InvalidRequestError("No such invoice", "id", code="resource_missing", http_status=404)
    assert not retry_advised(not_found)
    assert retry_advised(stripe.RateLimitError("Too many requests", http_status=429))
    assert not retry_advised(stripe.RateLimitError("Too many", http_status=429, headers={"Stripe-Should-Retry": "false"}))
    assert not retry_advised(stripe.APIError("Replayed failure", http_status=500, headers={"stripe-should-retry": "false"}))
    assert retry_advised(stripe.APIError("Conflict", http_status=409))
    assert retry_advised(stripe.InvalidRequestError("lock", None, http_status=400, headers={"Stripe-Should-Retry": "true"}))
    assert retry_advised(stripe.APIConnectionError("reset", should_retry=True))
    assert not retry_advised(stripe.APIConnectionError("bad certificate", should_retry=False))


# --- the gateways ------------------------------------------------------------------------------------


def test_meter_events_of_one_customer_go_one_at_a_time(stripe_emulator) -> None:
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=200, burst=20)
    resource.catalog.ensure_meter()
    customer = stripe_emulator.client().v1.customers.create({"name": "Busy Line"})
    stripe_emulator.set_faults(latency_ms=60)
    now = datetime.now(timezone.utc)
    run_in_threads(6, lambda index: resource.meters.create_event(customer.id, index + 1, now, f"call-{index}"))
    times = arrival_times(stripe_emulator, "/v1/billing/meter_events")
    assert len(times) == 6
    # Each answer takes ≥ 60 ms and the next event of this customer is only sent after it.
    assert min(later - earlier for earlier, later in zip(times, times[1:])) >= 0.055


def test_meter_event_summaries_come_back_as_whole_minutes(stripe_emulator) -> None:
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=200, burst=20)
    meter = resource.catalog.ensure_meter()
    customer = stripe_emulator.client().v1.customers.create({"name": "Summary Pty"})
    day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    resource.meters.create_event(customer.id, 7, day + timedelta(hours=3), "a")
    resource.meters.create_event(customer.id, 5, day + timedelta(days=1, hours=1), "b")
    resource.meters.create_event(customer.id, 5, day + timedelta(days=1, hours=1), "b")  # same identifier: deduplicated
    whole = resource.meters.summaries(meter.id, customer.id, day, day + timedelta(days=2))
    assert [(usage.start, usage.end, usage.minutes) for usage in whole] == [(day, day + timedelta(days=2), 12)]
    by_day = resource.meters.summaries(meter.id, customer.id, day, day + timedelta(days=2), group_by_day=True)
    assert [(usage.start, usage.minutes) for usage in by_day] == [(day, 7), (day + timedelta(days=1), 5)]
    assert resource.meters.meter_id() == meter.id


def test_the_invoice_gateway_on_a_renewal_draft(stripe_emulator) -> None:
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=200, burst=20)
    prices = resource.catalog.ensure(load_tier_catalog()).prices
    client = stripe_emulator.client()
    start = datetime(2027, 1, 31, 10, tzinfo=timezone.utc)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(start.timestamp())})
    customer = client.v1.customers.create(
        {"name": "Draft Co", "test_clock": clock.id, "payment_method": "pm_card_visa",
         "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[0].id}]})
    branding = InvoiceBranding("en", (CustomField("Client ID", "acct-7"), CustomField("Tier", "Tier 1")), "Your usage", "Thanks")
    resource.invoices.set_subscription_branding(subscription.id, branding)
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int((start + timedelta(days=28, minutes=5)).timestamp())})

    listed = resource.invoices.list_page(status="draft").invoices
    assert len(listed) == 1 and listed[0].branded  # the draft carries the subscription's brand fields
    draft = listed[0].invoice
    assert draft.subscription_id == subscription.id and draft.billing_reason == "subscription_cycle"
    assert (draft.period_start, draft.period_end) == (start, datetime(2027, 2, 28, 10, tzinfo=timezone.utc))
    assert draft.period_start is not None and draft.period_end is not None
    lines = [
        InvoiceLine(LineKind.MINUTES_USED, "Voice minutes used: 395 of 500", 0, draft.period_start, draft.period_end),
        InvoiceLine(LineKind.MINUTES_UNUSED, "Unused minutes: 105", 0, draft.period_start, draft.period_end),
    ]
    for _ in range(2):  # the second call replays the first under the same key: nothing is added twice
        resource.invoices.add_annotation_lines(draft.id, lines, {"minutes_used": "395"}, idempotency_key=f"annotate-{draft.id}")
    assert resource.invoices.annotation_lines(draft.id) == [
        ("minutes_used", "Voice minutes used: 395 of 500", 0), ("minutes_unused", "Unused minutes: 105", 0)
    ]
    with pytest.raises(AnnotationWriteConflict):  # the same key with other minutes: Stripe refuses, nothing added
        resource.invoices.add_annotation_lines(draft.id, lines[:1], {"minutes_used": "396"}, idempotency_key=f"annotate-{draft.id}")
    for missing in ["in_missing", f"{draft.id}/../../../customers/{customer.id}", f"{draft.id}?x=1"]:
        # an id is one path segment, quoted as the SDK quotes it: never another endpoint or this draft
        with pytest.raises(InvoiceGone):
            resource.invoices.add_annotation_lines(missing, lines, {"minutes_used": "1"}, idempotency_key=f"gone-{missing}")
    assert len(resource.invoices.annotation_lines(draft.id)) == 2
    period_line = next(line for line in client.v1.invoices.line_items.list(draft.id).data if line.description.startswith("Voice"))
    assert period_line.period.end == int(draft.period_end.timestamp()) - 1  # Stripe's inclusive end
    resource.invoices.write_branding(draft.id, branding)
    resource.invoices.finalize(draft.id)
    with pytest.raises(InvoiceNotEditable):
        resource.invoices.add_annotation_lines(draft.id, lines, {"minutes_used": "395"}, idempotency_key="too-late")
    resource.invoices.write_metadata(draft.id, {"aisyst_annotation_version": "1"})  # allowed after finalization
    finalized = resource.invoices.if_exists(draft.id)
    assert finalized is not None and finalized.status != "draft"
    assert finalized.metadata == {"minutes_used": "395", "aisyst_annotation_version": "1"}
    assert resource.invoices.if_exists("in_missing") is None
    assert resource.portal.session_url(customer.id, "https://aisyst.example/account").startswith("http")


def test_the_customer_gateway_lists_customers_and_subscriptions_on_test_clocks(stripe_emulator) -> None:
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=200, burst=20)
    price = resource.catalog.ensure(load_tier_catalog()).prices[0].id
    client = stripe_emulator.client()
    frozen = int(datetime(2027, 1, 31, 10, tzinfo=timezone.utc).timestamp())
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen})
    on_clock = client.v1.customers.create({"name": "Clocked", "test_clock": clock.id, "metadata": {"aisyst_account_code": "A-1"}})
    plain = client.v1.customers.create({"name": "Plain"})
    subscription = client.v1.subscriptions.create({"customer": on_clock.id, "items": [{"price": price}]})
    customers = {customer.id: customer for customer in resource.customers.list_customers()}
    assert set(customers) == {on_clock.id, plain.id} and customers[on_clock.id].account_code == "A-1"
    [listed] = resource.customers.list_subscriptions()
    assert listed.id == subscription.id and listed.items[0].product is not None
    assert resource.customers.test_clock_times([clock.id, "clock_gone"]) == {clock.id: datetime.fromtimestamp(frozen, timezone.utc)}


# --- secrets -----------------------------------------------------------------------------------------


def everything_said_about(error: BaseException) -> str:
    """str, repr, args, bodies and the formatted traceback of an error and its whole chain."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        for name in ("http_body", "json_body", "headers", "_message", "error"):
            parts.append(repr(getattr(current, name, None)))
        current = current.__cause__ or current.__context__
    parts += traceback.format_exception(error)
    return "\n".join(parts)


def test_live_keys_are_refused_before_any_request(stripe_emulator) -> None:
    resource = StripeResource(api_key=FAKE_LIVE_KEY, api_base=stripe_emulator.url)
    with pytest.raises(LiveModeRefused, match="AISYST_ALLOW_LIVE_MODE=true") as refused:
        resource.customers.list_customers()
    assert SECRET_TAIL not in everything_said_about(refused.value)
    restricted = StripeResource(api_key="rk_" + "live_" + SECRET_TAIL, api_base=stripe_emulator.url)
    with pytest.raises(LiveModeRefused):
        restricted.meters.meter_id()
    assert stripe_emulator.requests() == []


def test_an_authentication_error_carries_no_key(stripe_emulator) -> None:
    # Allowed live mode, so the key reaches the emulator, which (like Stripe in test mode) refuses it.
    resource = StripeResource(api_key=FAKE_LIVE_KEY, api_base=stripe_emulator.url, allow_live_mode=True, max_network_retries=1)
    with pytest.raises(stripe.AuthenticationError) as failure:
        resource.customers.list_customers()
    assert failure.value.http_status == 401
    assert SECRET_TAIL not in everything_said_about(failure.value)
    assert failure.value.__cause__ is None and failure.value.__context__ is None


def test_a_connection_error_carries_no_key_and_no_request_in_its_chain(unused_port: int) -> None:
    key = "sk_test_" + SECRET_TAIL
    resource = StripeResource(api_key=key, api_base=f"http://127.0.0.1:{unused_port}", max_network_retries=1)
    with pytest.raises(stripe.APIConnectionError) as failure:
        resource.customers.list_customers()
    said = everything_said_about(failure.value)
    assert SECRET_TAIL not in said and "Authorization" not in said
    assert failure.value.__cause__ is None and failure.value.__context__ is None


# The errors the SDK raises for v1 answers and connections (reference/STRIPE.md §8.4). The scrubbing
# rebuilds each through its public constructor: this pins those constructors.
V1_ERRORS = [
    stripe.APIError, stripe.APIConnectionError, stripe.AuthenticationError, stripe.CardError, stripe.IdempotencyError,
    stripe.InvalidRequestError, stripe.PermissionError, stripe.RateLimitError,
]


@pytest.mark.parametrize("kind", V1_ERRORS, ids=lambda kind: kind.__name__)
def test_an_error_that_echoes_the_key_is_scrubbed_and_keeps_its_type_and_facts(kind: type[stripe.StripeError]) -> None:
    key = "sk_test_" + SECRET_TAIL
    body = {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": f"No such thing for {key}"}}
    facts: dict[str, Any] = dict(
        http_body=str(body), http_status=404, json_body=body, headers={"request-id": "req_1", "Stripe-Should-Retry": "true"}
    )
    if kind in (stripe.InvalidRequestError, stripe.CardError):
        error = kind(f"No such thing for {key}", "param", "resource_missing", **facts)
    elif kind is stripe.APIConnectionError:
        error = kind(f"No such thing for {key}", code="resource_missing", should_retry=True, **facts)
    else:
        error = kind(f"No such thing for {key}", code="resource_missing", **facts)
    cleaned = scrubbed_error(error, key)
    assert type(cleaned) is kind
    assert (cleaned.code, cleaned.http_status, cleaned.request_id) == ("resource_missing", 404, "req_1")
    assert cleaned.error is not None and cleaned.error.code == "resource_missing"
    assert getattr(cleaned, "param", "param") == "param" and getattr(cleaned, "should_retry", True) is True
    assert retry_advised(cleaned)  # the headers the retry decision reads survive
    assert SECRET_TAIL not in everything_said_about(cleaned)
    assert "[redacted key]" in str(cleaned) and "[redacted key]" in repr(cleaned.json_body)


def test_the_resource_repr_and_str_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk_test_" + SECRET_TAIL
    resource = StripeResource(api_key=key, api_base="http://127.0.0.1:1")
    assert SECRET_TAIL not in repr(resource) and SECRET_TAIL not in str(resource)
    monkeypatch.setenv("STRIPE_SECRET_KEY", key)
    bound = StripeResource.from_settings(Settings.from_env())
    assert SECRET_TAIL not in repr(bound)
    resolved = bound.process_config_and_initialize()
    assert resolved.api_key == key and resolved.api_base is None  # Stripe itself, not the emulator
    assert SECRET_TAIL not in repr(resolved)


def test_without_a_key_the_emulator_is_meant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("STRIPE_API_BASE", raising=False)
    settings = Settings.from_env()
    resource = StripeResource.from_settings(settings)
    assert settings.stripe_uses_emulator
    assert (resource.api_base, resource.api_key) == ("http://127.0.0.1:12111", "sk_test_emulator")
