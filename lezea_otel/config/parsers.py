"""The parsers of the declared configuration (:mod:`.parameters`): each checks one kind of value.

A parser returns the value, raises :class:`Invalid` (unusable: the default is used) or
:class:`Adjusted` (usable after a correction: clamped into its bounds, or its valid part kept).
Nothing here imports OpenTelemetry at module level: they run before the SDK is imported.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

DAY_S: Final = 86_400
DAY_MS: Final = DAY_S * 1000
LIMIT_MAX: Final = 2**31 - 1
LEVELS: Final = ("builder", "tasker", "algorithm", "network", "layer", "phase")
AUDIT_FSYNC_POLICIES: Final = ("interval", "always", "finalize")
GRPC_STATUS_CODES: Final = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)


def amount(value: float, unit: str = "") -> str:
    """``86400`` s as ``1 day``, ``100000`` as ``100,000``: bounds as people read them."""
    if (unit, value) in (("s", DAY_S), ("ms", DAY_MS)):
        return "1 day"
    shown = f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"
    return f"{shown} {unit}".strip()


class Invalid(ValueError):
    """A value that cannot be used; the message says what was expected."""


class Adjusted(ValueError):
    """A value used after a correction (``value``); the message says what was corrected."""

    def __init__(self, value: Any, why: str) -> None:
        super().__init__(why)
        self.value = value


_SURROGATE = re.compile("[\ud800-\udfff]")  # what a variable read from non-UTF-8 bytes holds


def _text_of(raw: Any) -> str:
    text = os.fspath(raw) if isinstance(raw, os.PathLike) else raw
    if not isinstance(text, str):
        raise Invalid(f"expected text, got {type(raw).__name__}")
    if "\x00" in text:
        raise Invalid("contains a NUL character")
    return text.strip()


@dataclass(frozen=True)
class Number:
    """A finite number above zero (or from zero); outside ``[low, high]`` it is clamped (or refused)."""

    low: float
    high: float
    unit: str = ""
    integer: bool = False
    zero: bool = False
    clamp: bool = True

    @property
    def bounds(self) -> str:
        high = amount(self.high, self.unit)
        if self.low or self.zero:
            return f"{amount(self.low, self.unit)}-{high}"
        return f"above 0, at most {high}"

    @property
    def expected(self) -> str:
        return f"{'an integer' if self.integer else 'a number'} {self.bounds}"

    def __call__(self, raw: Any) -> Any:
        if isinstance(raw, bool):
            raise Invalid(f"expected {self.expected}")
        try:
            value = raw if isinstance(raw, int) else float(_text_of(raw) if isinstance(raw, str) else raw)
        except Exception:  # noqa: BLE001 - text that is no number, an object whose __float__ raises
            raise Invalid(f"expected {self.expected}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"expected {self.expected}")
        if value < 0 or (value == 0 and not self.zero):
            raise Invalid(f"expected {self.expected}")
        if self.integer:
            if value != int(value):
                raise Invalid(f"expected {self.expected}")
            value = int(value)
        if self.low <= value <= self.high:
            return value
        if not self.clamp:
            raise Invalid(f"expected {self.expected}")
        bound = self.low if value < self.low else self.high
        clamped = int(bound) if self.integer else float(bound)
        raise Adjusted(clamped, f"is out of range (expected {self.expected})")


@dataclass(frozen=True)
class Choice:
    """One of a few words, case-insensitive; ``aliases`` map other spellings to them."""

    options: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(self.options)

    def __call__(self, raw: Any) -> str:
        text = _text_of(raw).lower()
        text = dict(self.aliases).get(text, text)
        if text not in self.options:
            raise Invalid(f"expected {self.expected}")
        return text


def flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = _text_of(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise Invalid("expected true/false")


def text(raw: Any) -> str:
    """Non-empty text that can go out as UTF-8 (a variable read from non-UTF-8 bytes cannot: replaced)."""
    value = _text_of(raw)
    if not value:
        raise Invalid("expected non-empty text")
    if _SURROGATE.search(value):
        raise Adjusted(_SURROGATE.sub("\ufffd", value), "is not valid UTF-8")
    return value


def path(raw: Any) -> Path:
    """A folder name: any bytes the file system takes (a non-UTF-8 name is kept as it is)."""
    value = _text_of(raw)
    if not value:
        raise Invalid("expected a folder name")
    return Path(value)


def url(raw: Any) -> str:
    value = _text_of(raw)
    scheme, sep, rest = value.partition("://")
    if (not sep or not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*", scheme) or not rest.strip("/")
            or _SURROGATE.search(value) or any(c.isspace() for c in value)):
        raise Invalid("expected a URL such as http://localhost:4318")
    return value


def port(raw: Any) -> int | None:
    value = Number(0, 65535, integer=True, zero=True, clamp=False)(raw)
    return value or None


def existing_file(raw: Any) -> str:
    value = _text_of(raw)
    if not value or not Path(value).is_file():
        raise Invalid("no such file")
    return value


def headers(raw: Any) -> dict[str, str]:
    value = _text_of(raw)
    pairs = [pair for pair in value.split(",") if pair.strip()]
    if (any("=" not in pair or not pair.split("=", 1)[0].strip() for pair in pairs)
            or not value.isascii()):  # HTTP and gRPC metadata: non-ASCII goes URL-encoded
        raise Invalid("expected comma-separated key=value pairs, values URL-encoded")
    from opentelemetry.util.re import parse_env_headers

    return dict(parse_env_headers(value, liberal=True))  # a Mapping by its signature, a dict in fact


def levels(raw: Any) -> frozenset[str]:
    value = _text_of(raw).lower()
    if value in ("none", "off", ""):
        return frozenset()
    if value == "all":
        return frozenset(LEVELS)
    chosen = frozenset(v.strip() for v in value.split(",") if v.strip())
    if not chosen <= set(LEVELS):
        raise Invalid(f"expected a comma list of {', '.join(sorted(LEVELS))}, 'all' or 'none'")
    return chosen


SPAN_RANK_CHOICES: Final = ("all", "rank0", "node")


def span_ranks(raw: Any) -> str:
    """Which ranks export scope and phase spans: ``all``, ``rank0``, ``node`` (each node's first rank), or a
    share of the ranks between 0 and 1 (``0.1``: about one rank in ten, rank 0 always)."""
    value = _text_of(raw).lower()
    if value in SPAN_RANK_CHOICES:
        return value
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not 0 <= share <= 1:
        raise Invalid("expected 'all', 'rank0', 'node' or a share of the ranks between 0 and 1")
    return repr(share)


def gpus(raw: Any) -> str:
    value = _text_of(raw)
    if value.lower() in ("job", "all"):
        return value.lower()
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if parts and all(part.startswith(("GPU-", "MIG-")) for part in parts):
        return ",".join(parts)
    raise Invalid("expected 'job', 'all' or a comma list of GPU-/MIG- UUIDs")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def variable_names(raw: Any) -> tuple[str, ...]:
    parts = [part.strip() for part in _text_of(raw).split(",") if part.strip()]
    good = tuple(part for part in parts if _NAME.fullmatch(part))
    bad = [part for part in parts if not _NAME.fullmatch(part)]
    if bad:
        raise Adjusted(good, f"has {bad[0]!r}, not a variable name")
    return good


def resource_attributes(raw: Any) -> str:
    """``key=value`` pairs as the SDK reads them; an item without ``=`` or key is dropped, the rest kept."""
    value = _text_of(raw)
    utf8 = _SURROGATE.sub("\ufffd", value)  # read from non-UTF-8 bytes: cannot go out as it is
    items = [item for item in utf8.split(",") if item.strip()]
    good = [item.strip() for item in items if "=" in item and item.split("=", 1)[0].strip()]
    if len(good) < len(items):
        bad = next(item for item in items if item.strip() not in good)
        if not good:
            raise Invalid(f"item {bad.strip()!r} is not key=value")
        raise Adjusted(",".join(good), f"has an item {bad.strip()!r} that is not key=value")
    if utf8 != value:
        raise Adjusted(",".join(good), "is not valid UTF-8")
    return ",".join(good)


_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def identifier(raw: Any) -> str:
    """An id that is also a folder name on every file system: letters, digits, ``.``, ``_``, ``-``."""
    value = _text_of(raw)
    if not _IDENTIFIER.fullmatch(value):
        raise Invalid("expected 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def traceparent(raw: Any) -> str:
    """W3C trace context: ``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``, ids not all zero."""
    value = _text_of(raw)
    match = _TRACEPARENT.fullmatch(value)
    if (not match or match[1] == "ff" or (match[1] == "00" and match[5]) or set(match[2]) == {"0"}
            or set(match[3]) == {"0"}):
        raise Invalid("expected W3C traceparent 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>")
    return value


def status_codes(raw: Any) -> str:
    codes = [code.strip().upper() for code in _text_of(raw).split(",") if code.strip()]
    if not codes or any(code not in GRPC_STATUS_CODES for code in codes):
        raise Invalid("expected a comma list of gRPC status code names such as UNAVAILABLE")
    return ",".join(codes)


@dataclass(frozen=True)
class EntryPoints:
    """Names of installed entry points of ``group`` (the SDK loads them and fails on unknown names)."""

    group: str
    many: bool = False
    extra: tuple[str, ...] = ()

    def __call__(self, raw: Any) -> str:
        from importlib.metadata import entry_points

        known = {point.name for point in entry_points(group=self.group)} | set(self.extra)
        parts = [part.strip() for part in _text_of(raw).split(",") if part.strip()]
        wanted = parts if self.many else [_text_of(raw)]
        unknown = [name for name in wanted if name not in known]
        if not unknown:
            return ",".join(wanted)
        installed = ", ".join(sorted(known)) or "none"
        why = f"{unknown[0]!r} is not an installed {self.group} entry point ({installed})"
        kept = [name for name in wanted if name in known]
        if self.many and kept:
            raise Adjusted(",".join(kept), f"has {why}")
        raise Invalid(why)
