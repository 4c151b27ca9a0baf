"""Shaping user input into plain, safe values: numbers, keys, flat attribute maps, scrubbed text.

Every function here is total: whatever object a user passes (a numpy or torch scalar, a proxy
whose attribute probes raise, a generator that fails half-way, a string with lone surrogates), the
result is a plain, JSON- and OTLP-encodable value, and each repair is one ``warn(problem, detail)``.
Numpy and torch scalars are recognised by shape (``.item()`` with no dimensions), so neither
library is ever imported here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

from lezea_otel.util.readable import (
    FLOAT_MAX,
    INT64_MAX,
    INT64_MIN,
    MAX_LABEL,
    MAX_TEXT,
    REDACTED,
    UINT64_MAX,
    Warn,
    as_text,
    describe,
    error_text,
    getattr_quiet,
    ignore,
    int_text,
    is_a,
    is_mapping,
    items_of,
    iterable,
    iterate,
    label,
    looks_secret_key,
    safe_repr,
    scrub,
    scrub_text,
    text,
    text_key,
    valid_text,
)

__all__ = ["FLOAT_MAX", "INT64_MAX", "INT64_MIN", "MAX_DEPTH", "MAX_KEY", "MAX_LABEL", "MAX_LIST_ITEMS",
           "MAX_NODES", "MAX_TEXT", "REDACTED", "UINT64_MAX", "Warn", "as_number", "as_text",
           "attribute_value", "describe", "error_text", "flat_attributes", "format_float", "format_number",
           "getattr_quiet", "id_list", "identifier", "ignore", "is_a", "is_mapping", "is_number",
           "items_of", "iterable", "iterate", "json_default", "json_text", "label", "looks_secret_key",
           "number", "numbers", "plain", "sanitise", "scalar", "scrub", "scrub_text", "step_value", "tags",
           "text", "text_key", "to_float", "valid_text"]
"""Also re-exported: the text and probe helpers of :mod:`readable`, so callers keep one import."""

MAX_LIST_ITEMS = 10_000
"""Longest id list an audit line keeps; longer ones keep this many plus a digest of all."""
MAX_DEPTH = 8
MAX_KEY = 200
"""Longest metric key kept whole (a metric name is ``lezea.training.<key>``, at most 255 characters)."""
MAX_NODES = 100_000
"""Most values one free-form argument may hold: a cyclic or exploding nest stops here, not in memory."""
_NOT_A_NUMBER = object()
NOT_A_NUMBER = _NOT_A_NUMBER
"""What :func:`scalar` returns for anything that is no number."""
_PLAIN = frozenset((float, int, bool))

# -- numbers ------------------------------------------------------------------------------------


def scalar(value: Any) -> Any:
    """A plain ``bool``, ``int`` or ``float`` for Python, numpy and torch numbers; ``_NOT_A_NUMBER``
    otherwise.

    Subclasses (``np.float64`` is a float) are read through the base type's own slot, so an
    overridden ``__float__`` or ``__repr__`` is never called; probes that raise mean "not a number".
    """
    kind = type(value)
    if kind is float or kind is int or kind is bool:
        return value
    try:
        if isinstance(value, float):
            return float.__float__(value)
        if isinstance(value, int):
            return int.__int__(value)
        if value is None or isinstance(value, (str, bytes, bytearray)):
            return _NOT_A_NUMBER
        item = getattr(value, "item", None)
        if item is None or not _is_scalar_shape(value):
            return _NOT_A_NUMBER
        inner = item()
        kind = type(inner)
        if kind is float or kind is int or kind is bool:
            return inner
        if getattr(getattr(value, "dtype", None), "kind", None) == "f":  # np.longdouble.item() stays numpy
            return float(inner)
    except Exception:  # noqa: BLE001 - a proxy's probe, a CUDA tensor whose device is gone
        return _NOT_A_NUMBER
    return _NOT_A_NUMBER


def _is_scalar_shape(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    if shape is not None:
        try:
            return len(shape) == 0 or math.prod(shape) == 1
        except TypeError:
            return False
    return getattr(value, "ndim", 0) == 0


def as_number(value: Any) -> Any:
    """A float for any number (bools are 0/1, an int past the float range is clamped); ``_NOT_A_NUMBER``
    else."""
    result = scalar(value)
    if result is _NOT_A_NUMBER or type(result) is float:
        return result
    return _int_to_float(result)


def _int_to_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return FLOAT_MAX if value > 0 else -FLOAT_MAX


def is_number(value: Any) -> bool:
    return value is not _NOT_A_NUMBER


def to_float(value: Any, what: str, warn: Warn) -> Any:
    """Like :func:`as_number`, warning when an integer beyond 64 bits becomes a (clamped) float."""
    result = scalar(value)
    if result is _NOT_A_NUMBER or type(result) is float:
        return result
    if INT64_MIN <= result <= UINT64_MAX:
        return float(result)
    converted = _int_to_float(result)
    kept = f"recorded as {converted:.6g}" + (
        "" if abs(converted) < FLOAT_MAX else " (clamped to the float range)")
    warn(f"{what} is an integer beyond 64 bits", f"got {describe(value)}; {kept}")
    return converted


def number(value: Any, what: str, warn: Warn, *, finite_nonnegative: bool = False) -> float | None:
    """One numeric argument; warn and return None when it cannot be a number.

    ``finite_nonnegative``: NaN, infinities and negative values are ignored (one warning saying so).
    """
    converted = to_float(value, what, warn)
    if converted is _NOT_A_NUMBER:
        warn(f"{what} is not a number", f"got {describe(value)}; ignored")
        return None
    result: float = converted  # past the sentinel, to_float gives a float
    if finite_nonnegative and not 0 <= result < math.inf:  # NaN fails this too
        warn(f"{what} must be a finite number >= 0", f"got {format_number(result)}; ignored")
        return None
    if result - result != 0:
        warn(f"{what} is {format_float(result)}", "recorded as is")
    return result


def numbers(metrics: Any, what: str, warn: Warn) -> dict[str, float]:
    """Flatten a mapping of numbers to ``{"a.b": float}``; every bad entry warns and is skipped.

    Bools are numbers (1.0 and 0.0), as in numpy; numpy and torch scalars of any dtype are floats.
    """
    if not is_mapping(metrics):
        warn(f"{what} must be a dict of numbers", f"got {describe(metrics)}; nothing recorded from it")
        return {}
    out: dict[str, float] = {}
    pairs: Any = metrics.items()  # a flat dict of ASCII keys (the usual one) needs no flattening
    if type(metrics) is not dict or not all(type(k) is str and k.isascii() for k in metrics) or any(
            type(v) is dict or (type(v) not in _PLAIN and is_mapping(v)) for v in metrics.values()):
        pairs = _flatten(metrics, what, warn, [MAX_NODES])
    for key, value in pairs:
        if not 0 < len(key) <= MAX_KEY:
            if not key:
                warn(f"{what}: an empty key", "its value was skipped")
                continue
            warn(f"{what}: a key longer than {MAX_KEY} characters",  # one warning, whichever keys
                 f"{key[:40]!r}... recorded under its first {MAX_KEY}")
            key = key[:MAX_KEY]
        result = to_float(value, f"{what}: value for {key!r}", warn)
        if result is _NOT_A_NUMBER:
            warn(f"{what}: value for {key!r} is not a number", f"got {describe(value)}; that key was skipped")
            continue
        if result - result != 0:
            warn(f"{what}: value for {key!r} is {format_float(result)}", "recorded as is")
        out[key] = result
    return out


def _flatten(mapping: Any, what: str, warn: Warn, budget: list[int], prefix: str = "",
             depth: int = 0) -> Iterator[tuple[str, Any]]:
    for raw_key, value in items_of(mapping, what, warn):
        budget[0] -= 1
        if budget[0] < 0:
            warn(f"{what} holds more than {MAX_NODES} values", "the rest was skipped")
            return
        key = prefix + text_key(raw_key, what, warn)
        if is_mapping(value):
            if depth >= MAX_DEPTH:
                warn(f"{what}: nesting deeper than {MAX_DEPTH} levels", f"{key!r} skipped")
                continue
            if depth == 0 and not prefix:
                warn(f"{what}: nested dicts are flattened", f"{key!r} becomes '{key}.<name>'")
            yield from _flatten(value, what, warn, budget, key + ".", depth + 1)
        else:
            yield key, value


def step_value(step: Any, what: str, warn: Warn) -> int | None:
    """A step or epoch: a whole number within 64 bits, else None (recorded without it) and a warning."""
    if step is None:
        return None
    result = scalar(step)
    if type(result) is float and result - result == 0 and result.is_integer():
        result = int(result)
    if type(result) is not int and type(result) is not bool:
        warn(f"{what} must be an integer", f"got {describe(step)}; recorded without a {what}")
        return None
    if not INT64_MIN <= result <= INT64_MAX:
        warn(f"{what} is beyond the 64-bit integer range", f"got {describe(step)}; recorded without a {what}")
        return None
    if result < 0:
        warn(f"{what} is negative", f"got {int(result)}; recorded as given")
    return int(result)


# -- containers ---------------------------------------------------------------------------------


class _Plain:
    """One free-form argument made JSON-plain; an ancestor set and a node budget bound cycles and nests."""

    __slots__ = ("active", "nodes", "warn", "what")

    def __init__(self, what: str, warn: Warn) -> None:
        self.active: set[int] = set()  # the containers on the path being copied (ids): a cycle meets one
        self.what, self.warn, self.nodes = what, warn, 0

    def value(self, value: Any, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.warn(f"{self.what} holds more than {MAX_NODES} values", "the rest is stored as null")
            return None
        kind = type(value)
        if value is None or kind is bool or kind is float:
            return value
        if kind is str:
            return self.text(value)
        if kind is int and INT64_MIN <= value <= INT64_MAX:
            return value
        number = scalar(value)
        if number is not _NOT_A_NUMBER:
            if type(number) is not int or INT64_MIN <= number <= INT64_MAX:
                return number
            self.warn(f"{self.what}: an integer beyond 64 bits", f"got {describe(value)}; kept as text")
            return int_text(number)[:MAX_TEXT]
        if is_a(value, str):
            return self.text(as_text(value, self.what, self.warn))
        if depth >= MAX_DEPTH:
            self.warn(f"{self.what}: nesting deeper than {MAX_DEPTH} levels", "stored as text")
            return safe_repr(value)
        if id(value) in self.active:
            self.warn(f"{self.what} contains itself", "the inner reference is stored as '<cycle>'")
            return "<cycle>"
        self.active.add(id(value))
        try:
            return self.container(value, depth)
        except Exception as error:  # noqa: BLE001 - a probe of the user's object raised
            self.warn(f"{self.what}: a value could not be read", f"{describe(value)}: {error_text(error)}; "
                      "stored as its description")
            return describe(value)
        finally:
            self.active.discard(id(value))

    def container(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is dict or is_mapping(value):
            mapping: dict[str, Any] = {}
            for k, v in items_of(value, self.what, self.warn):
                if self.nodes > MAX_NODES:
                    break
                mapping[text_key(k, self.what, self.warn)] = self.value(v, depth + 1)
            return mapping
        if kind is list or kind is tuple or isinstance(value, (list, tuple, set, frozenset)):
            out: list[Any] = []
            for item in value if kind is list or kind is tuple else iterate(value, self.what, self.warn):
                if self.nodes > MAX_NODES:
                    break
                if len(out) >= MAX_LIST_ITEMS:
                    self.warn(f"{self.what}: a list of more than {MAX_LIST_ITEMS} items",
                              f"the audit keeps the first {MAX_LIST_ITEMS}")
                    break
                out.append(self.value(item, depth + 1))
            return out
        tolist = getattr(value, "tolist", None)
        if tolist is not None and callable(tolist):
            return self.value(tolist(), depth + 1)
        text = safe_repr(value)
        self.warn(f"{self.what}: a value that is no JSON value", f"{describe(value)} stored as its text "
                  f"{text[:60]!r}")
        return text

    def text(self, value: str) -> str:
        value = valid_text(value, self.what, self.warn)
        if len(value) > MAX_TEXT:
            self.warn(f"{self.what}: a text longer than {MAX_TEXT} characters", "it was cut")
            value = value[:MAX_TEXT]
        return value


def plain(value: Any, what: str, warn: Warn) -> Any:
    """A JSON-safe copy of free-form data (config, action outputs); odd objects become ``repr`` text."""
    return _Plain(what, warn).value(value, 0)


def sanitise(value: Any) -> Any:
    """Any value as JSON-native data, silently: the audit's last line of defence (it counts the repair)."""
    return _Plain("audit", ignore).value(value, 0)


def identifier(value: Any, what: str, warn: Warn) -> str | int:
    """One sample id: an int (numpy integers too) or a short text."""
    number = scalar(value)
    if type(number) is int and INT64_MIN <= number <= INT64_MAX:
        return number
    if number is _NOT_A_NUMBER and not is_a(value, str):
        shown = plain(value, what, warn)
        value = shown if isinstance(shown, str) else as_text(shown, what, warn)
    elif number is not _NOT_A_NUMBER:
        value = int_text(number) if type(number) is int else repr(number)
    ident = as_text(value, what, warn)
    if len(ident) > MAX_LABEL:
        warn(f"{what}: an id is longer than {MAX_LABEL} characters", f"the first {MAX_LABEL} were kept")
        ident = ident[:MAX_LABEL]
    return ident


def id_list(values: Any, what: str, warn: Warn) -> tuple[list[Any], int, str] | None:
    """Sample ids: (kept ids, total count, sha256 digest of all); None if it is not a list."""
    if values is None:
        return [], 0, ""
    if is_a(values, (str, bytes, bytearray)) or getattr_quiet(values, "ndim") == 0 or not iterable(values):
        warn(f"{what} must be a list of ids", f"got {describe(values)}; ignored")
        return None
    if is_mapping(values):
        warn(f"{what} is a dict", "its keys were used as the ids")
    kept: list[Any] = []
    digest = hashlib.sha256()
    count = 0
    for item in iterate(values, what, warn):
        shaped = identifier(item, what, warn)
        digest.update(f"\n{shaped}".encode() if count else str(shaped).encode())
        count += 1
        if len(kept) < MAX_LIST_ITEMS:
            kept.append(shaped)
    if count > MAX_LIST_ITEMS:
        warn(f"{what}: {count} ids", f"the audit keeps the first {MAX_LIST_ITEMS} and a sha256 digest of all")
    return kept, count, digest.hexdigest()


def tags(raw: Any, warn: Warn) -> list[str]:
    """Experiment tags as short strings: a list, one string, or a dict (``k=v``)."""
    if raw is None:
        return []
    if is_a(raw, str):
        return [label(raw, "tags", warn) or ""]
    if is_mapping(raw):
        pairs = (f"{as_text(k, 'tags', warn)}={as_text(v, 'tags', warn)}"
                 for k, v in items_of(raw, "tags", warn))
        return [label(pair, "tags", warn) or "" for pair in pairs]
    if not iterable(raw):
        warn("tags must be a list of strings", f"got {describe(raw)}; ignored")
        return []
    return [label(as_text(tag, "tags", warn), "tags", warn) or "" for tag in iterate(raw, "tags", warn)]


# -- attributes, JSON ---------------------------------------------------------------------------


def attribute_value(value: Any) -> Any:
    """A value OTel accepts as an attribute (primitive or homogeneous primitive list), else text."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list) and value and len(value) <= 128 and (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
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


def json_default(value: Any) -> Any:
    """orjson's ``default``: numbers of any kind as numbers, everything else as plain data or text."""
    return sanitise(value)


def json_text(value: Any) -> str:
    import orjson

    try:
        text = orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = orjson.dumps(sanitise(value), default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    return text[:MAX_TEXT]


def format_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def format_number(value: float) -> str:
    return format_float(value) if value - value != 0 else repr(value)
