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
    """(route, path args, path_exists_for_another_method). A literal segment wins over a path
    argument, as in Stripe: `POST /v1/invoices/create_preview` is not an update of invoice
    "create_preview"."""
    other_method = False
    best: tuple[Route, dict[str, str]] | None = None
    for candidate in ROUTES:
        found = candidate.pattern.match(path)
        if found:
            if candidate.method != method:
                other_method = True
            elif best is None or len(found.groupdict()) < len(best[1]):
                best = (candidate, found.groupdict())
    if best is None:
        return None, {}, other_method
    return best[0], best[1], True
