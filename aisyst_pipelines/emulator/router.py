"""The /v1 route table. Handlers register with `@route("POST", "/v1/invoices/{invoice}/add_lines", "InvoiceAddLinesParams")`.

The third argument names the stripe package's TypedDict for the endpoint; the request's
parameters are checked against it (unknown/missing/invalid-integer) before the handler runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aisyst_pipelines.emulator.store import Store

Handler = Callable[["Call"], Any]


@dataclass
class Call:
    """One API call as a handler sees it."""

    store: Store
    method: str
    path: str
    params: dict[str, Any]
    args: dict[str, str]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    params_class: str | None


ROUTES: list[Route] = []


def route(method: str, template: str, params_class: str | None = None) -> Callable[[Handler], Handler]:
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, regex, handler, params_class))
        return handler

    return register


def match(method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
    """(route, path args, path_exists_for_another_method)."""
    other_method = False
    for candidate in ROUTES:
        found = candidate.pattern.match(path)
        if found:
            if candidate.method == method:
                return candidate, found.groupdict(), True
            other_method = True
    return None, {}, other_method
