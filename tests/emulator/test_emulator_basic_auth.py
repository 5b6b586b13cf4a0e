"""HTTP Basic auth as Stripe's guides use it: `curl https://api.stripe.com/v1/prices -u "sk_test_…:" -d …`."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest


def curl(*args: str) -> tuple[int, dict]:
    """Run the real curl; (HTTP status, JSON body)."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", "--write-out", "\n%{http_code}", *args],
        capture_output=True, text=True, check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def test_the_guides_curl_calls_work_against_the_emulator(stripe_emulator) -> None:
    url = stripe_emulator.url
    status, product = curl(f"{url}/v1/products", "-u", "sk_test_guide:", "-d", "name=Tier 1")
    assert status == 200 and product["id"].startswith("prod_")
    status, price = curl(
        f"{url}/v1/prices", "-u", "sk_test_guide:",
        "-d", f"product={product['id']}", "-d", "currency=usd", "-d", "unit_amount=29900",
        "-d", "recurring[interval]=month", "-d", "lookup_key=tier_1_monthly",
    )
    assert status == 200 and (price["unit_amount"], price["recurring"]["interval"]) == (29900, "month")
    status, listed = curl(f"{url}/v1/prices?lookup_keys[]=tier_1_monthly", "-u", "sk_test_guide:")
    assert status == 200 and [p["id"] for p in listed["data"]] == [price["id"]]
    # What curl sent and what the SDK reads are one state.
    assert stripe_emulator.client().v1.prices.retrieve(price["id"]).lookup_key == "tier_1_monthly"


def test_basic_auth_is_refused_as_stripe_refuses_it(stripe_emulator) -> None:
    url = f"{stripe_emulator.url}/v1/customers"
    status, body = curl(url, "-u", "sk_live_nope:")
    assert status == 401 and "test-mode keys only" in body["error"]["message"]
    status, body = curl(url, "-u", ":")  # no key as the user name
    assert status == 401 and "did not provide an API key" in body["error"]["message"]
    status, body = curl(url, "-H", "Authorization: Basic not-base64!")
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
