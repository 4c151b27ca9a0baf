"""Reading a user's objects without trusting them: probes, text, descriptions and secret scrubbing.

A proxy whose ``__class__`` raises, a ``__repr__`` or ``__str__`` that fails, a generator that
breaks half-way, a string with lone surrogates: each is read as far as it can be and reported
through ``warn(problem, detail)``; nothing here raises into the caller. :mod:`values` re-exports
these, so callers keep writing ``values.text(...)``.
"""

from __future__ import annotations

import re
import reprlib
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

Warn = Callable[[str, str], None]
"""``warn(problem, detail)`` bound to one public call."""

MAX_TEXT = 65_536
MAX_LABEL = 256
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
"""Integers OTLP (int64) can carry; the audit keeps others as text or a float, with a warning."""
FLOAT_MAX = 1.7976931348623157e308
"""Longest name-like value (a data split, an agent or component id, a tag): these become attributes."""
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
_SURROGATES = re.compile("[\ud800-\udfff]")


def ignore(problem: str, detail: str) -> None:
    """A ``Warn`` for repairs nobody is told about (the audit's last line of defence counts its own)."""


def is_a(value: Any, types: type | tuple[type, ...]) -> bool:
    """``isinstance`` that survives a proxy whose ``__class__`` raises (then: no)."""
    try:
        return isinstance(value, types)
    except Exception:  # noqa: BLE001
        return False


def is_mapping(value: Any) -> bool:
    try:
        return isinstance(value, Mapping)
    except Exception:  # noqa: BLE001 - a proxy whose __class__ raises
        return False


def items_of(mapping: Any, what: str, warn: Warn) -> Iterator[tuple[Any, Any]]:
    """A mapping's items; one that raises while read keeps what was read, with a warning."""
    try:
        yield from _read_all(iter(mapping.items()), what, warn, "entries")
    except Exception as error:  # noqa: BLE001 - items() itself raised
        warn(f"{what} could not be read", f"{error_text(error)}; nothing recorded from it")


def iterate(values: Any, what: str, warn: Warn) -> Iterator[Any]:
    """The items of an iterable; one that raises while read keeps what was read, with a warning."""
    try:
        iterator = iter(values)
    except Exception as error:  # noqa: BLE001
        warn(f"{what} could not be read", f"{error_text(error)}; nothing recorded from it")
        return
    yield from _read_all(iterator, what, warn, "items")


def _read_all(iterator: Iterator[Any], what: str, warn: Warn, noun: str) -> Iterator[Any]:
    count = 0
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - a generator or a proxy failing half-way
            warn(f"{what} raised while being read", f"{error_text(error)}; the {count} {noun} read were kept")
            return
        count += 1
        yield item


def iterable(value: Any) -> bool:
    try:
        iter(value)
    except Exception:  # noqa: BLE001 - not iterable, or __iter__ itself raised
        return False
    return True


def getattr_quiet(value: Any, name: str) -> Any:
    """``getattr(value, name, None)`` that also survives a probe raising something else."""
    try:
        return getattr(value, name, None)
    except Exception:  # noqa: BLE001
        return None


def valid_text(value: str, what: str, warn: Warn) -> str:
    """``value`` as valid UTF-8: lone surrogates (a latin-1 file name from ``os.listdir``) become U+FFFD."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        warn(f"{what} is not valid UTF-8 (lone surrogates)", "each one was replaced by U+FFFD")
        return _SURROGATES.sub("\ufffd", value)
    return value


def as_text(value: Any, what: str, warn: Warn) -> str:
    """``str(value)`` as valid UTF-8; a ``__str__`` that raises gives the object's description instead."""
    if type(value) is not str:
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                value = int_text(int.__int__(value))
            else:
                value = str.__str__(value) if isinstance(value, str) else str(value)
        except Exception as error:  # noqa: BLE001 - the user's __str__
            warn(f"{what}: str() raised", f"{error_text(error)}; stored as {describe(value)!r}")
            value = describe(value)
    return valid_text(value, what, warn)


def error_text(error: BaseException, typed: bool = True) -> str:
    """``Type: message`` (or the message only) of any exception, even one whose ``__str__`` raises."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a user's exception class may be as odd as its values
        message = "(the message could not be read)"
    text = f"{type(error).__name__}: {message}" if typed else message
    return valid_text(text[:200], "", ignore)


def exception_fields(error: BaseException) -> dict[str, str]:
    """What an exception span event holds (OTel's ``exception.*``): the module-qualified type, the message
    and the stack trace, read without ``str()`` raising; written into the record, so the exporter
    makes the same event from the audit as the trainer saw."""
    kind = type(error)
    module = getattr(kind, "__module__", "")
    qualified = f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__
    try:
        stacktrace = "".join(traceback.format_exception(error))
    except Exception:  # noqa: BLE001 - a traceback that cannot be formatted costs the stack trace only
        stacktrace = error_text(error)
    return {"type": valid_text(qualified, "", ignore), "message": error_text(error, typed=False),
            "stacktrace": valid_text(stacktrace, "", ignore)}


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 6
_REPR.maxdict, _REPR.maxlevel = 4, 3


def describe(value: Any) -> str:
    """``"<type> <repr>"`` for a warning, at most ~80 characters; never raises, whatever the object."""
    try:
        name = type(value).__name__
        name = name[:40] if isinstance(name, str) else "object"
    except Exception:  # noqa: BLE001
        name = "object"
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            shown = int_text(int.__int__(value))
        elif isinstance(value, float):
            shown = repr(float.__float__(value))
        else:
            shown = _REPR.repr(value)
        if not isinstance(shown, str):
            shown = "?"
    except Exception as error:  # noqa: BLE001 - a __repr__, __len__ or __class__ that raises
        shown = f"<repr() raised {type(error).__name__}>"
    shown = valid_text(shown, "", ignore)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{name} {shown}"


def int_text(value: int) -> str:
    """Decimal text of an int; hexadecimal past Python's 4,300-digit ``str()`` limit."""
    try:
        return str(value)
    except ValueError:
        return format(value, "#x")


def safe_repr(value: Any, limit: int = MAX_TEXT) -> str:
    """``repr(value)`` as valid text of at most ``limit`` characters; the description if it raises."""
    try:
        shown = repr(value)
        if not isinstance(shown, str):
            shown = describe(value)
    except Exception:  # noqa: BLE001
        shown = describe(value)
    return valid_text(shown, "", ignore)[:limit]


def text(value: Any, what: str, warn: Warn, *, optional: bool = False, limit: int = MAX_TEXT) -> str | None:
    """A string argument; other types are converted with a warning, text past ``limit`` is cut."""
    if value is None:
        if not optional:
            warn(f"{what} is missing", "got None")
        return None
    if not is_a(value, str):  # one warning, whether str() worked or raised
        shown, raised = describe(value), []

        def note(problem: str, detail: str) -> None:
            raised.append(detail) if problem.endswith("str() raised") else warn(problem, detail)

        result = as_text(value, what, note)
        warn(f"{what} should be a string", f"got {shown}; " + (f"str() raised: {raised[0]}" if raised
                                                             else "stored as str()"))
    else:
        result = as_text(value, what, warn)
    if len(result) > limit:
        warn(f"{what} is longer than {limit} characters", f"got {len(result)}; the first {limit} were kept")
        result = result[:limit]
    return result


def label(value: Any, what: str, warn: Warn, *, optional: bool = False) -> str | None:
    """A short name (data split, agent or component id): text of at most ``MAX_LABEL`` characters."""
    return text(value, what, warn, optional=optional, limit=MAX_LABEL)


def text_key(key: Any, what: str, warn: Warn) -> str:
    """A mapping key as valid text; a key that is not a string is converted, with a warning."""
    if type(key) is str:
        return valid_text(key, f"{what}: a key", warn)
    result = as_text(key, f"{what}: a key", warn)
    if not is_a(key, str):
        warn(f"{what}: keys must be strings", f"key {describe(key)} used as {result!r}")
    return result


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
