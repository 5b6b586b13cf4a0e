"""Parameter checking against the installed stripe package's own typed params.

stripe 16.1.0 ships one TypedDict per endpoint (`stripe.params.InvoiceAddLinesParams`, …),
generated from Stripe's OpenAPI spec for the pinned API version. Walking those types gives the
emulator Stripe's answers for free and keeps it in step with the SDK: `parameter_unknown` for a
key the endpoint does not know (e.g. `lines[0][price]`, removed in basil), `parameter_missing`
for a required key, `parameter_invalid_integer` for a non-integer where an integer is expected.
It also normalises indexed arrays (`lines[0][...]`) into lists where the type says List.

The types are resolved lazily once per class and cached; anything the walker cannot resolve is
accepted as is (the handlers still coerce what they use).
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import types
import typing
from typing import Any

from aisyst_pipelines.emulator.wire import invalid, is_index_dict, missing_param, to_int, unknown_param

_ANY = object()  # "accept anything"
_lock = threading.Lock()


def _typing_extensions_forms() -> tuple[Any, ...]:
    import typing_extensions

    return (typing_extensions.NotRequired, typing_extensions.Required, typing.NotRequired, typing.Required)


@functools.cache
def params_class(name: str) -> Any:
    """`stripe.params.<name>`, or `stripe.params.<package>.<name>` for "package.Name"; None when absent."""
    package, _, short = name.rpartition(".")
    for module in (f"stripe.params.{package}" if package else "stripe.params",):
        try:
            name = short
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        return cls
    return None


@functools.cache
def _request_option_keys() -> frozenset[str]:
    from stripe._request_options import RequestOptions

    return frozenset(RequestOptions.__annotations__)


@functools.cache
def _resolve(annotation: Any, module_name: str) -> Any:
    if isinstance(annotation, str):
        annotation = typing.ForwardRef(annotation)
    if isinstance(annotation, typing.ForwardRef):
        try:
            return eval(annotation.__forward_arg__, vars(sys.modules[module_name]))  # noqa: S307 - SDK source
        except Exception:  # noqa: BLE001 - unresolvable → accept anything
            return _ANY
    return annotation


@functools.cache
def _fields(cls: Any) -> tuple[dict[str, tuple[Any, str]], frozenset[str]]:
    """(key → (annotation, module), required keys) of a TypedDict, request options excluded."""
    skip = _request_option_keys()
    fields: dict[str, tuple[Any, str]] = {}
    for klass in reversed(cls.__mro__):
        for key, annotation in getattr(klass, "__annotations__", {}).items():
            if key not in skip:
                fields[key] = (annotation, klass.__module__)
    required = frozenset(k for k in getattr(cls, "__required_keys__", ()) if k not in skip)
    return fields, required


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__required_keys__") and hasattr(tp, "__annotations__")


def check(params: dict[str, Any], class_name: str | None) -> dict[str, Any]:
    """Validate and normalise `params` against `stripe.params.<class_name>`; returns the params."""
    if not class_name:
        return params
    with _lock:  # typing caches are not built for concurrent first use
        cls = params_class(class_name)
    if cls is None:
        return params
    return _check_dict(params, cls, "")


def _check_dict(value: dict[str, Any], cls: Any, path: str) -> dict[str, Any]:
    fields, required = _fields(cls)
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{path}[{key}]" if path else key
        if key not in fields:
            raise unknown_param(name)
        annotation, module = fields[key]
        out[key] = _check(item, annotation, module, name)
    for key in required:
        if key not in value:
            raise missing_param(f"{path}[{key}]" if path else key)
    return out


def _check(value: Any, annotation: Any, module: str, path: str) -> Any:
    tp = _resolve(annotation, module)
    if tp is _ANY or tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in _typing_extensions_forms():
        return _check(value, typing.get_args(tp)[0], module, path)
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, typing.get_args(tp), module, path)
    if origin in (list, typing.List):  # noqa: UP006
        (element,) = typing.get_args(tp) or (_ANY,)
        if value == "":
            return []
        if is_index_dict(value):
            value = [value[k] for k in sorted(value, key=int)]
        if isinstance(value, dict) and not value:
            return []
        if not isinstance(value, list):
            raise invalid(f"Invalid array: {path}", param=path)
        return [_check(v, element, module, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            raise invalid(f"Invalid object: {path}", param=path)
        return value
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            shown = ", ".join(repr(a) for a in allowed)
            raise invalid(f"Invalid {path}: must be one of {shown}", param=path)
        return value
    if _is_typeddict(tp):
        if not isinstance(value, dict):
            raise invalid(f"Invalid object: {path}", param=path)
        return _check_dict(value, tp, path)
    if tp is int:
        to_int(value, path)
        return value
    if tp is bool:
        if value not in ("true", "false", True, False):
            raise invalid(f"Invalid boolean: {value}", param=path)
        return value
    if tp is str:
        if isinstance(value, dict):
            raise invalid(f"Invalid string: {path}", param=path)
        return value
    # Decimal, float, StripeObject generics, …: accept.
    return value


def _kind(value: Any) -> str:
    if isinstance(value, list) or is_index_dict(value):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "scalar"


def _member_kind(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, typing.List):  # noqa: UP006
        return "list"
    if origin in (dict, typing.Dict) or _is_typeddict(tp):  # noqa: UP006
        return "dict"
    if origin is not None and origin not in (typing.Literal,):
        return "dict"  # generic StripeObject etc.
    return "scalar"


def _check_union(value: Any, members: tuple[Any, ...], module: str, path: str) -> Any:
    resolved = [_resolve(m, module) for m in members]
    if any(m is _ANY for m in resolved):
        return value
    kind = _kind(value)
    if value == "" and any(typing.get_origin(m) is typing.Literal and "" in typing.get_args(m) for m in resolved):
        return value
    candidates = [m for m in resolved if _member_kind(m) == kind]
    if kind == "dict" and not candidates:
        candidates = [m for m in resolved if _member_kind(m) == "list"]
    if not candidates:
        candidates = resolved
    first_error: Exception | None = None
    for member in candidates:
        try:
            return _check(value, member, module, path)
        except Exception as error:  # noqa: BLE001 - try the next member of the union
            first_error = first_error or error
    assert first_error is not None
    raise first_error
