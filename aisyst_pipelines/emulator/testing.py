"""What the `stripe_emulator` pytest fixture hands a test: a running emulator plus a client factory."""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator.faults import Faults
from aisyst_pipelines.emulator.server import EmulatorServer

TEST_API_KEY = "sk_test_emulator"


class RunningEmulator:
    """A started `EmulatorServer` as tests use it: `.url`, `.api_key`, `.client()`, faults, reset, dump."""

    api_key = TEST_API_KEY

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, max_network_retries: int = 2, **options: Any) -> Any:
        """A real `stripe.StripeClient` pointed at this emulator (API and meter-events hosts)."""
        import stripe

        return stripe.StripeClient(
            options.pop("api_key", self.api_key),
            base_addresses={"api": self.url, "meter_events": self.url},
            max_network_retries=max_network_retries,
            **options,
        )

    def set_faults(self, **changes: Any) -> Faults:
        return self.server.set_faults(**changes)

    def reset(self) -> None:
        self.server.reset()

    def dump(self) -> dict[str, Any]:
        return self.server.dump()

    def requests(self, path: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        return self.server.requests(path, method)
