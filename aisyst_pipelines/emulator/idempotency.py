"""Idempotency keys as Stripe keeps them (reference/STRIPE.md §7.2).

A POST with an `Idempotency-Key` is remembered (per API key) with its method, path and
parameters once it starts running; its answer is stored when it ends and replayed to any later
request with the same key (`Idempotent-Replayed: true`). The same key with other parameters is
a 400 `idempotency_error`; while the first request is still running, a duplicate gets 409
`idempotency_key_in_use` (which the SDK retries). Answers that Stripe does not store —
validation errors, 429s, 401s — release the key so that a retry runs afresh.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aisyst_pipelines.emulator.wire import ApiError

RETENTION_SECONDS = 24 * 3600


@dataclass
class Entry:
    fingerprint: tuple[str, str, str]
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    body: bytes = b""


class IdempotencyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], Entry] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def begin(self, scope: str, key: str, fingerprint: tuple[str, str, str]) -> Entry | None:
        """Claim the key. Returns a finished entry to replay, or None when the caller runs the request."""
        if len(key) > 255:
            raise ApiError(
                400, "Idempotency keys can be at most 255 characters long.", param="Idempotency-Key", cacheable=False
            )
        now = time.time()
        with self._lock:
            entry = self._entries.get((scope, key))
            if entry is not None and now - entry.started > RETENTION_SECONDS:
                entry = None
            if entry is None:
                self._entries[(scope, key)] = Entry(fingerprint, now)
                return None
        if entry.fingerprint != fingerprint:
            raise ApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first used with. "
                f"Try using a key other than '{key}' if you meant to execute a different request.",
                type="idempotency_error",
                cacheable=False,
            )
        if not entry.done.is_set():
            raise ApiError(
                409,
                "There is currently another in-progress request using this Stripe token (probably the same "
                "idempotency key). Please try again later.",
                code="idempotency_key_in_use",
                cacheable=False,
            )
        return entry

    def finish(self, scope: str, key: str, status: int, body: bytes) -> None:
        with self._lock:
            entry = self._entries.get((scope, key))
        if entry is not None:
            entry.status, entry.body = status, body
            entry.done.set()

    def release(self, scope: str, key: str) -> None:
        """Forget a key whose request produced an answer Stripe would not store."""
        with self._lock:
            entry = self._entries.pop((scope, key), None)
        if entry is not None:
            entry.done.set()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"key": key, "method": e.fingerprint[0], "path": e.fingerprint[1], "status": e.status}
                for (_, key), e in self._entries.items()
            ]
