"""The portal gateway: customer-portal sessions, linked from the usage-alert e-mails."""

from __future__ import annotations

from stripe.params.billing_portal import SessionCreateParams

from .client import StripeCalls


class PortalGateway:
    def __init__(self, calls: StripeCalls) -> None:
        self._calls = calls

    def session_url(self, customer_id: str, return_url: str) -> str:
        """A billing-portal session URL for the customer (short-lived; create one per visit)."""
        params: SessionCreateParams = {"customer": customer_id, "return_url": return_url}
        return self._calls.write(lambda c, o: c.v1.billing_portal.sessions.create(params, o)).url
