"""StripeResource against the emulator over HTTP: rate limit, retries, meter-event serialisation,
live-key refusal, and no secret in any error (the real stripe SDK, never a mocked client)."""

import threading
import traceback
from datetime import datetime, timedelta, timezone

import pytest
import stripe

from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.settings import Settings
from resources.stripe import LiveModeRefused, StripeResource, scrubbed_error
from resources.stripe_records import NewInvoiceLine

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
    run_in_threads(4, lambda index: [instances[index % 2].find_price_by_lookup_key("nothing") for _ in range(6)])
    times = arrival_times(stripe_emulator, "/v1/prices")
    assert len(times) == 24
    # Lower bound only: a loaded machine can stretch the span, never shrink it below the pacing
    # (minus how late the very first request may have arrived).
    assert times[-1] - times[0] >= 23 / 10 - 0.5


def test_test_keys_default_to_25_per_second_and_live_keys_to_100() -> None:
    assert StripeResource(api_key="sk_test_x").effective_requests_per_second == 25
    assert StripeResource(api_key=FAKE_LIVE_KEY, allow_live_mode=True).effective_requests_per_second == 100
    assert StripeResource(api_key="sk_test_x", requests_per_second=7).effective_requests_per_second == 7


def test_5xx_answers_are_retried_with_the_same_idempotency_key(stripe_emulator) -> None:
    customer = stripe_emulator.client().v1.customers.create({"name": "Retry Ltd"})
    stripe_emulator.set_faults(error_rate=0.5)
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=100, max_network_retries=8, retry_backoff_seconds=0.05)
    for number in range(6):
        resource.update_customer_invoice_settings(customer.id, footer=f"footer {number}")
    log = stripe_emulator.requests(path=f"/v1/customers/{customer.id}", method="POST")
    failed = [entry for entry in log if entry["status"] == 500]
    assert failed, "the seeded fault injector answered no 500 at all"
    assert sum(entry["status"] == 200 for entry in log) == 6
    succeeded_keys = {entry["idempotency_key"] for entry in log if entry["status"] == 200}
    assert {entry["idempotency_key"] for entry in failed} <= succeeded_keys  # each retry reused its key
    stripe_emulator.set_faults(error_rate=0.0)
    assert stripe_emulator.client().v1.customers.retrieve(customer.id).invoice_settings.footer == "footer 5"


def test_429_answers_are_retried_even_without_stripe_should_retry(stripe_emulator) -> None:
    stripe_emulator.set_faults(rate_limit_error_rate=0.4, rate_limit_should_retry=False)
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=100, max_network_retries=8, retry_backoff_seconds=0.05)
    for _ in range(5):
        assert resource.find_price_by_lookup_key("nothing") is None
    log = stripe_emulator.requests(path="/v1/prices")
    assert any(entry["status"] == 429 for entry in log)
    assert sum(entry["status"] == 200 for entry in log) == 5


def test_dropped_connections_are_retried_and_replayed_not_done_twice(stripe_emulator) -> None:
    stripe_emulator.set_faults(drop_rate=0.3)
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=100, max_network_retries=8, retry_backoff_seconds=0.05)
    resource.ensure_catalog(load_tier_catalog())
    outcomes = [entry["outcome"] for entry in stripe_emulator.requests()]
    assert "drop" in outcomes
    objects = stripe_emulator.dump()["objects"]
    assert (len(objects["product"]), len(objects["price"]), len(objects["billing.meter"]), len(objects["tax_rate"])) == (3, 3, 1, 1)


def test_meter_events_of_one_customer_go_one_at_a_time(stripe_emulator) -> None:
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=200, burst=20)
    resource.ensure_meter(resource.meter_event_name)
    customer = stripe_emulator.client().v1.customers.create({"name": "Busy Line"})
    stripe_emulator.set_faults(latency_ms=60)
    now = datetime.now(timezone.utc)
    run_in_threads(6, lambda index: resource.create_meter_event(customer.id, index + 1, now, f"call-{index}"))
    times = arrival_times(stripe_emulator, "/v1/billing/meter_events")
    assert len(times) == 6
    # Each answer takes ≥ 60 ms and the next event of this customer is only sent after it.
    assert min(later - earlier for earlier, later in zip(times, times[1:])) >= 0.055


def test_meter_event_summaries_come_back_as_whole_minutes(stripe_emulator) -> None:
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=200, burst=20)
    meter = resource.ensure_meter(resource.meter_event_name)
    customer = stripe_emulator.client().v1.customers.create({"name": "Summary Pty"})
    day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    resource.create_meter_event(customer.id, 7, day + timedelta(hours=3), "a")
    resource.create_meter_event(customer.id, 5, day + timedelta(days=1, hours=1), "b")
    resource.create_meter_event(customer.id, 5, day + timedelta(days=1, hours=1), "b")  # same identifier: deduplicated
    whole = resource.meter_event_summaries(meter.id, customer.id, day, day + timedelta(days=2))
    assert [(usage.start, usage.end, usage.minutes) for usage in whole] == [(day, day + timedelta(days=2), 12)]
    by_day = resource.meter_event_summaries(meter.id, customer.id, day, day + timedelta(days=2), group_by_day=True)
    assert [(usage.start, usage.minutes) for usage in by_day] == [(day, 7), (day + timedelta(days=1), 5)]
    assert resource.find_meter().id == meter.id


def test_invoice_methods_on_a_renewal_draft(stripe_emulator) -> None:
    resource = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=200, burst=20)
    prices = resource.ensure_catalog(load_tier_catalog()).prices
    client = stripe_emulator.client()
    start = datetime(2027, 1, 31, 10, tzinfo=timezone.utc)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(start.timestamp())})
    customer = client.v1.customers.create(
        {"name": "Draft Co", "test_clock": clock.id, "payment_method": "pm_card_visa",
         "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[0].id}]})
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int((start + timedelta(days=28, minutes=5)).timestamp())})

    drafts = resource.list_invoices(status="draft", customer_id=customer.id)
    assert len(drafts) == 1
    draft = drafts[0]
    assert draft.subscription_id == subscription.id and draft.billing_reason == "subscription_cycle"
    assert (draft.period_start, draft.period_end) == (start, datetime(2027, 2, 28, 10, tzinfo=timezone.utc))
    lines = [
        NewInvoiceLine("Voice minutes used: 395 of 500", period_start=draft.period_start, period_end=draft.period_end),
        NewInvoiceLine("Unused minutes: 105", metadata={"aisyst_line": "unused"}),
    ]
    annotated = resource.add_invoice_lines(draft.id, lines, {"minutes_used": "395"}, idempotency_key=f"annotate-{draft.id}")
    again = resource.add_invoice_lines(draft.id, lines, {"minutes_used": "395"}, idempotency_key=f"annotate-{draft.id}")
    assert annotated.metadata["minutes_used"] == again.metadata["minutes_used"] == "395"
    texts = [line.description for line in client.v1.invoices.line_items.list(draft.id, {"limit": 100}).data]
    assert texts.count("Voice minutes used: 395 of 500") == 1  # the replay added nothing
    period_line = next(line for line in client.v1.invoices.line_items.list(draft.id).data if line.description.startswith("Voice"))
    assert period_line.period.end == int(draft.period_end.timestamp()) - 1  # Stripe's inclusive end
    assert resource.retrieve_invoice(draft.id).metadata["minutes_used"] == "395"
    assert resource.list_invoices(subscription_id=subscription.id, created_gte=start + timedelta(days=1))[0].id == draft.id

    resource.update_customer_invoice_settings(customer.id, custom_fields=[("Client ID", "acct-7"), ("Tier", "Tier 1")], footer="Thanks")
    settings = client.v1.customers.retrieve(customer.id).invoice_settings
    assert [(field.name, field.value) for field in settings.custom_fields] == [("Client ID", "acct-7"), ("Tier", "Tier 1")]
    assert settings.footer == "Thanks"
    assert resource.create_portal_session(customer.id, "https://aisyst.example/account").startswith("http")


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
        resource.list_customers()
    assert SECRET_TAIL not in everything_said_about(refused.value)
    restricted = StripeResource(api_key="rk_" + "live_" + SECRET_TAIL, api_base=stripe_emulator.url)
    with pytest.raises(LiveModeRefused):
        restricted.find_meter()
    assert stripe_emulator.requests() == []


def test_an_authentication_error_carries_no_key(stripe_emulator) -> None:
    # Allowed live mode, so the key reaches the emulator, which (like Stripe in test mode) refuses it.
    resource = StripeResource(api_key=FAKE_LIVE_KEY, api_base=stripe_emulator.url, allow_live_mode=True, max_network_retries=1)
    with pytest.raises(stripe.AuthenticationError) as failure:
        resource.list_customers()
    assert failure.value.http_status == 401
    assert SECRET_TAIL not in everything_said_about(failure.value)
    assert failure.value.__cause__ is None and failure.value.__context__ is None


def test_a_connection_error_carries_no_key_and_no_request_in_its_chain(unused_port: int) -> None:
    key = "sk_test_" + SECRET_TAIL
    resource = StripeResource(api_key=key, api_base=f"http://127.0.0.1:{unused_port}", max_network_retries=1)
    with pytest.raises(stripe.APIConnectionError) as failure:
        resource.list_customers()
    said = everything_said_about(failure.value)
    assert SECRET_TAIL not in said and "Authorization" not in said
    assert failure.value.__cause__ is None and failure.value.__context__ is None


def test_an_error_that_echoes_the_key_is_scrubbed_and_keeps_its_type_and_code() -> None:
    key = "sk_test_" + SECRET_TAIL
    body = {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": f"No such thing for {key}"}}
    error = stripe.InvalidRequestError(
        f"No such thing for {key}", "param", code="resource_missing", http_body=str(body), http_status=404,
        json_body=body, headers={"request-id": "req_1"},
    )
    cleaned = scrubbed_error(error, key)
    assert isinstance(cleaned, stripe.InvalidRequestError)
    assert (cleaned.code, cleaned.http_status, cleaned.request_id) == ("resource_missing", 404, "req_1")
    assert SECRET_TAIL not in everything_said_about(cleaned)
    assert "[redacted key]" in str(cleaned)


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
