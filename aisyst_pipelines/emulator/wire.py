"""Stripe's v1 wire format: form decoding with brackets, value coercion, errors, JSON.

stripe-python encodes request parameters as `application/x-www-form-urlencoded` with nested
hashes (`invoice_settings[footer]=x`), indexed arrays (`lines[0][period][start]=1`,
`expand[0]=data.lines`), `true`/`false` booleans and `""` for "unset". Query strings of GET and
DELETE requests use the same encoding (`created[gte]=1700000000`). Everything arrives as a
string; handlers coerce with the helpers below, which raise Stripe-shaped errors.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"([^\[\]]+)|\[([^\[\]]*)\]")
_INTEGER = re.compile(r"-?\d+\Z")


class ApiError(Exception):
    """An error answered in Stripe's shape: `{"error": {type, code, message, param, doc_url}}`.

    `cacheable` says whether the idempotency layer may store this answer under the request's key:
    Stripe stores answers once endpoint execution has begun, but never validation failures,
    rate limits or authentication errors (those are safe to retry with the same key).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        cacheable: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.cacheable = cacheable

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def invalid(message: str, *, code: str | None = None, param: str | None = None) -> ApiError:
    """A validation failure (400, never cached under the idempotency key)."""
    return ApiError(400, message, code=code, param=param, cacheable=False)


def missing_param(param: str) -> ApiError:
    return invalid(f"Missing required param: {param}.", code="parameter_missing", param=param)


def unknown_param(param: str) -> ApiError:
    return invalid(f"Received unknown parameter: {param}", code="parameter_unknown", param=param)


def no_such(kind: str, object_id: str, *, param: str | None = None, status: int = 404) -> ApiError:
    """`resource_missing`: 404 for the object named in the path, 400 for one named in a parameter."""
    return ApiError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


# --------------------------------------------------------------------------------------------
# decoding


def decode_form(text: str) -> dict[str, Any]:
    """Decode a form/query string into nested dicts; indexed arrays stay dicts keyed "0", "1", …

    `as_list` (or the schema normaliser in `params.py`) turns them into lists where a list is
    expected, so that `metadata[0]=x` stays a metadata key. `a[]=x&a[]=y` (the non-indexed
    spelling some clients use) appends in order.
    """
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(text, keep_blank_values=True):
        parts = [m.group(1) if m.group(1) is not None else m.group(2) for m in _KEY.finditer(raw_key)]
        if not parts:
            continue
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":  # a[] → next free index
                part = str(len(node)) if isinstance(node, dict) else "0"
            if last:
                if isinstance(node, dict):
                    node[part] = value
                break
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                child = {}
                if isinstance(node, dict):
                    node[part] = child
            node = child
    return root


def is_index_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.isdigit() for k in value)


def as_list(value: Any, param: str) -> list[Any]:
    """An indexed array (`x[0]=…&x[1]=…`) as a list in index order; "" is the empty list."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if is_index_dict(value):
        return [value[k] for k in sorted(value, key=int)]
    raise invalid(f"Invalid array: {param}", param=param)


def to_int(value: Any, param: str) -> int:
    if isinstance(value, bool):
        raise invalid(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.match(value.strip() or "x"):
        return int(value)
    if value == "":
        raise invalid(
            f"You passed an empty string for '{param}'. We assume empty values are an attempt to unset a "
            "parameter; however '{param}' cannot be unset. You should remove '{param}' from your request "
            "or supply a non-empty value.",
            code="parameter_invalid_empty",
            param=param,
        )
    raise invalid(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)


def opt_int(params: dict[str, Any], key: str, param: str | None = None) -> int | None:
    value = params.get(key)
    return None if value is None else to_int(value, param or key)


def req(params: dict[str, Any], key: str, param: str | None = None) -> Any:
    value = params.get(key)
    if value is None:
        raise missing_param(param or key)
    return value


def req_str(params: dict[str, Any], key: str, param: str | None = None) -> str:
    value = req(params, key, param)
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {param or key}", param=param or key)
    if value == "":
        raise invalid(
            f"You passed an empty string for '{param or key}'. We assume empty values are an attempt to "
            f"unset a parameter; however '{param or key}' cannot be unset.",
            code="parameter_invalid_empty",
            param=param or key,
        )
    return value


def to_bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0"):
        return False
    raise invalid(f"Invalid boolean: {value}", param=param)


def opt_bool(params: dict[str, Any], key: str) -> bool | None:
    value = params.get(key)
    return None if value is None else to_bool(value, key)


Bounds = tuple[int | None, int | None, int | None, int | None]  # (gt, gte, lt, lte) of a range filter


def range_filter(params: dict[str, Any], key: str) -> Bounds:
    """`created=123` or `created[gte]=…&created[lt]=…` → (gt, gte, lt, lte)."""
    value = params.get(key)
    if value is None:
        return (None, None, None, None)
    if isinstance(value, dict):
        for op in value:
            if op not in ("gt", "gte", "lt", "lte"):
                raise unknown_param(f"{key}[{op}]")
        return tuple(  # type: ignore[return-value]
            None if value.get(op) is None else to_int(value[op], f"{key}[{op}]") for op in ("gt", "gte", "lt", "lte")
        )
    exact = to_int(value, key)
    return (None, exact, None, exact)


def in_range(number: int | None, bounds: Bounds) -> bool:
    gt, gte, lt, lte = bounds
    if number is None:
        return all(b is None for b in bounds)
    return (
        (gt is None or number > gt)
        and (gte is None or number >= gte)
        and (lt is None or number < lt)
        and (lte is None or number <= lte)
    )


def merge_metadata(current: dict[str, str] | None, update: Any, param: str = "metadata") -> dict[str, str]:
    """Stripe's metadata update: keys merge, `k=""` removes a key, `metadata=""` clears all."""
    result = dict(current or {})
    if update is None:
        return result
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise invalid("Invalid hash", param=param)
    for key, value in update.items():
        if not isinstance(value, str):
            raise invalid("Metadata values must be strings", param=f"{param}[{key}]")
        if len(key) > 40:
            raise invalid("Metadata keys can have up to 40 characters.", param=f"{param}[{key}]")
        if value == "":
            result.pop(key, None)
        else:
            if len(value) > 500:
                raise invalid("Metadata values can have up to 500 characters.", param=f"{param}[{key}]")
            result[key] = value
    if len(result) > 50:
        raise invalid("Metadata can have up to 50 keys.", param=param)
    return result


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
