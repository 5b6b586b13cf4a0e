"""Failed renewal payments to the end: Stripe's Smart Retries and its revenue-recovery settings.

Stripe retries a failed automatic charge on a schedule (Billing → Revenue recovery → Retries; the
Dashboard only, there is no API for it): "Smart Retries" tries again up to a number of times within a
number of days (Stripe recommends 8 times within 2 weeks, its default). Meanwhile the invoice stays
open with `next_payment_attempt` set, the subscription is `past_due`, and every failed retry is
another `invoice.payment_failed` (attempt_count counting up). Each retry charges whatever payment
method is the default *then*: a customer who updates the card (API or the portal page) is charged on
the next retry, the invoice is paid and the subscription returns to `active`.

When the last retry fails, `next_payment_attempt` is null and the settings decide: the subscription
is canceled (`customer.subscription.deleted`, `cancellation_details.reason = payment_failed`), marked
`unpaid`, or left `past_due`; the invoice is left open ("past due") or marked uncollectible.

The emulator spaces the retries evenly over the window (Smart Retries picks its moments by machine
learning; no schedule is published). They are scheduled actions on the invoice's clock, so they run
as a test clock advances (real time for objects without one): `billing.pay` schedules them
(`billing.schedule_next_retry`, action `retry_payment`) and applies the outcome
(`billing.retries_exhausted`). This module holds the settings and the rules, free of state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

WhenExhausted = Literal["cancel", "unpaid", "past_due"]
DAY = 86400


@dataclass(frozen=True)
class RevenueRecovery:
    """The revenue-recovery settings: `retries` retries within `retry_days` days of the first failed
    charge, then the subscription is canceled, made unpaid or left past due, and the invoice is left
    open or (`mark_uncollectible`) marked uncollectible. `retries=0` turns retries off."""

    retries: int = 8
    retry_days: int = 14
    when_exhausted: WhenExhausted = "cancel"
    mark_uncollectible: bool = False

    def __post_init__(self) -> None:
        if self.retries < 0 or self.retry_days < 0 or (self.retries and not self.retry_days):
            raise ValueError("retries and retry_days must not be negative (and retries need days to happen in)")
        if self.when_exhausted not in ("cancel", "unpaid", "past_due"):
            raise ValueError(f"when_exhausted must be cancel, unpaid or past_due, not {self.when_exhausted!r}")

    def retry_times(self, first_failure: int) -> list[int]:
        """When each retry comes: evenly over the window, the last at its end."""
        return [first_failure + round(k * self.retry_days * DAY / self.retries) for k in range(1, self.retries + 1)]

    def updated(self, **changes: Any) -> RevenueRecovery:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_dunned(invoice: dict[str, Any], subscription: dict[str, Any] | None) -> bool:
    """Invoices Stripe collects automatically and retries: charge_automatically with auto_advance — not
    the first invoice of a subscription still `incomplete` (that one expires instead)."""
    return (
        invoice["auto_advance"]
        and invoice["collection_method"] == "charge_automatically"
        and (subscription is None or subscription["status"] != "incomplete")
    )
