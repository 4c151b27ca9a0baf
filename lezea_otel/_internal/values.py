"""Shaping user input into plain, safe values: numbers, keys, flat attribute maps, scrubbed text.

Numpy and torch scalars are recognised by shape (``.item()`` with no dimensions), so neither
library is ever imported here.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Warn = Callable[[str, str], None]
"""``warn(problem, detail)`` bound to one public call."""

MAX_LIST_ITEMS = 10_000
"""Longest id list an audit line keeps; longer ones keep this many plus a digest of all."""
MAX_TEXT = 65_536
MAX_DEPTH = 8
_NOT_A_NUMBER = object()

_SECRET_KEY = re.compile(
    r"(token|secret|passw|pwd|credential|api[_-]?key|apikey|private[_-]?key|access[_-]?key|auth|cookie|session"
    r"|(^|[_.\-])key$)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(\b(sk|pk|rk)-[A-Za-z0-9_\-]{16,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bhf_[A-Za-z0-9]{20,}|\bxox[baprs]-[A-Za-z0-9\-]{10,}|\bAKIA[0-9A-Z]{16}\b|\beyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-.]+)"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s]+@")
REDACTED = "***"


def as_number(value: Any) -> Any:
    """A float for int/float/bool and 0-d numpy/torch values; ``_NOT_A_NUMBER`` otherwise."""
    if isinstance(value, float):
        return value
    if isinstance(value, (bool, int)):
        return float(value)
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (str, bytes)) and _is_scalar_shape(value):
        try:
            inner = item()
        except Exception:  # noqa: BLE001 - e.g. a CUDA tensor whose device is gone
            return _NOT_A_NUMBER
        if isinstance(inner, (bool, int, float)):
            return float(inner)
    return _NOT_A_NUMBER


def _is_scalar_shape(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    if shape is not None:
        try:
            return len(shape) == 0 or math.prod(shape) == 1
        except TypeError:
            return False
    return getattr(value, "ndim", 0) == 0


def is_number(value: Any) -> bool:
    return value is not _NOT_A_NUMBER


def number(value: Any, what: str, warn: Warn) -> float | None:
    """Normalize one numeric argument; warn and return None when it cannot be a number."""
    result = as_number(value)
    if result is _NOT_A_NUMBER:
        warn(f"{what} is not a number", f"got {describe(value)}; ignored")
        return None
    if not math.isfinite(result):
        warn(f"{what} is {format_float(result)}", "recorded as is")
    return result


def numbers(metrics: Any, what: str, warn: Warn) -> dict[str, float]:
    """Flatten a mapping of numbers to ``{"a.b": float}``; every bad entry warns and is skipped."""
    if not isinstance(metrics, Mapping):
        warn(f"{what} must be a dict of numbers", f"got {describe(metrics)}; nothing recorded from it")
        return {}
    out: dict[str, float] = {}
    for key, value in _flatten(metrics, what, warn):
        result = as_number(value)
        if result is _NOT_A_NUMBER:
            warn(f"{what}: value for {key!r} is not a number", f"got {describe(value)}; that key was skipped")
            continue
        if not math.isfinite(result):
            warn(f"{what}: value for {key!r} is {format_float(result)}", "recorded as is")
        out[key] = result
    return out


def _flatten(mapping: Mapping[Any, Any], what: str, warn: Warn, prefix: str = "", depth: int = 0):
    for raw_key, value in mapping.items():
        key = prefix + text_key(raw_key, what, warn)
        if isinstance(value, Mapping):
            if depth >= MAX_DEPTH:
                warn(f"{what}: nesting deeper than {MAX_DEPTH} levels", f"{key!r} skipped")
                continue
            if depth == 0 and not prefix:
                warn(f"{what}: nested dicts are flattened", f"{key!r} becomes '{key}.<name>'")
            yield from _flatten(value, what, warn, key + ".", depth + 1)
        else:
            yield key, value


def text_key(key: Any, what: str, warn: Warn) -> str:
    if isinstance(key, str):
        return key
    text = str(key)
    warn(f"{what}: keys must be strings", f"key {describe(key)} used as {text!r}")
    return text


def text(value: Any, what: str, warn: Warn, *, optional: bool = False) -> str | None:
    """A string argument; other types are converted with a warning, long text is cut."""
    if value is None:
        if not optional:
            warn(f"{what} is missing", "got None")
        return None
    if not isinstance(value, str):
        warn(f"{what} should be a string", f"got {describe(value)}; stored as str()")
        value = str(value)
    if len(value) > MAX_TEXT:
        warn(f"{what} is longer than {MAX_TEXT} characters", "cut")
        value = value[:MAX_TEXT]
    return value


def step_value(step: Any, what: str, warn: Warn) -> int | None:
    if step is None:
        return None
    result = as_number(step)
    if result is _NOT_A_NUMBER or not math.isfinite(result) or result != int(result):
        warn(f"{what} must be an integer", f"got {describe(step)}; recorded without a step")
        return None
    if result < 0:
        warn(f"{what} is negative", f"got {int(result)}; recorded as given")
    return int(result)


def plain(value: Any, what: str, warn: Warn, depth: int = 0) -> Any:
    """A JSON-safe copy of free-form data (config, action outputs); odd objects become ``repr``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value if not isinstance(value, str) or len(value) <= MAX_TEXT else value[:MAX_TEXT]
    if isinstance(value, float):
        return value
    number_value = as_number(value)
    if number_value is not _NOT_A_NUMBER:
        return number_value
    if depth >= MAX_DEPTH:
        warn(f"{what}: nesting deeper than {MAX_DEPTH} levels", "stored as text")
        return repr(value)[:MAX_TEXT]
    if isinstance(value, Mapping):
        return {text_key(k, what, warn): plain(v, what, warn, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if len(items) > MAX_LIST_ITEMS:
            warn(f"{what}: list of {len(items)} items", f"the audit keeps the first {MAX_LIST_ITEMS}")
            items = items[:MAX_LIST_ITEMS]
        return [plain(v, what, warn, depth + 1) for v in items]
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        try:
            return plain(tolist(), what, warn, depth + 1)
        except Exception:  # noqa: BLE001
            pass
    return repr(value)[:MAX_TEXT]


def id_list(values: Any, what: str, warn: Warn) -> tuple[list[Any], int, str] | None:
    """Sample ids: (kept ids, total count, sha256 digest of all); None if it is not a list."""
    if values is None:
        return [], 0, ""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        warn(f"{what} must be a list of ids", f"got {describe(values)}; ignored")
        return None
    items = [v if isinstance(v, (str, int)) else str(plain(v, what, warn)) for v in values]
    digest = hashlib.sha256("\n".join(map(str, items)).encode()).hexdigest()
    if len(items) > MAX_LIST_ITEMS:
        warn(
            f"{what}: {len(items)} ids",
            f"the audit keeps the first {MAX_LIST_ITEMS} and a sha256 digest of all",
        )
    return items[:MAX_LIST_ITEMS], len(items), digest


def tags(raw: Any, warn: Warn) -> list[str]:
    """Experiment tags as strings: a list, one string, or a dict (``k=v``)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, Mapping):
        return [f"{k}={v}" for k, v in raw.items()]
    try:
        return [str(tag) for tag in raw]
    except TypeError:
        warn("tags must be a list of strings", f"got {describe(raw)}; ignored")
        return []


def looks_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def scrub_text(value: str) -> str:
    """Remove credentials from free text: URL user-info and well-known token shapes."""
    value = _URL_USERINFO.sub(r"\g<scheme>", value)
    return _SECRET_VALUE.sub(REDACTED, value)


def scrub(value: Any) -> Any:
    """Recursively redact values under secret-looking keys and token-shaped strings."""
    if isinstance(value, Mapping):
        return {k: REDACTED if looks_secret_key(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def attribute_value(value: Any) -> Any:
    """A value OTel accepts as an attribute (primitive or homogeneous primitive list), else text."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list) and value and len(value) <= 128:
        if all(isinstance(v, str) for v in value) or all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            return value
    return json_text(value)


def flat_attributes(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` with OTel-safe values; None is dropped."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and value:
            out.update(flat_attributes(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = attribute_value(value)
    return out


def json_text(value: Any) -> str:
    import orjson

    try:
        text = orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text[:MAX_TEXT]


def format_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def describe(value: Any) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{type(value).__name__} {shown}"
