"""The safety net: nothing in lezea_otel may raise into training code.

Bad input is reported once per (call, problem) on the ``lezea_otel`` logger; a loop that logs a
NaN every step gets one warning, not a million. A call that cannot even bind (a missing argument,
a keyword typo) is the user's mistake: it is reported in Python's own words, once per distinct
mistake, and records nothing. Our own bugs are caught at the public boundary and reported, so a
telemetry fault costs telemetry, never the run. Set ``LEZEA_RAISE_INTERNAL=1`` (our test suite
does) to turn internal errors back into exceptions, on every path that reports one.

The end of the module makes values safe for the OTel SDK: its exporters cannot encode integers
outside int64 or strings with lone surrogates, and one such value stalls or kills a signal's export.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from lezea_otel.util.readable import INT64_MAX, INT64_MIN, error_text, ignore, valid_text

logger = logging.getLogger("lezea_otel")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Warnings:
    """One warning per distinct (call, problem); everything after that is counted, not printed."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.count = 0
        self.messages: list[str] = []

    def warn(self, call: str, problem: str, detail: str = "") -> None:
        """Report ``problem`` for ``call``; ``detail`` varies per occurrence and is not deduplicated."""
        self._report(call, problem, f"{call}: {problem}{': ' + detail if detail else ''}")

    def mistake(self, call: str, message: str) -> None:
        """A call the user got wrong, reported verbatim (``log_reward() missing ...``) once per message."""
        self._report(call, message, message)

    def _report(self, call: str, problem: str, message: str) -> None:
        with self._lock:
            self.count += 1
            key = (call, problem)
            if key in self._seen:
                return
            self._seen.add(key)
            if len(self.messages) < 1000:
                self.messages.append(message)
        logger.warning("%s", message)


def raise_internal() -> bool:
    return os.environ.get("LEZEA_RAISE_INTERNAL", "") == "1"


_reported: set[tuple[str, str]] = set()
SELF = object()
"""``guarded(default=SELF)``: on an internal error return the object the method was called on."""


def report_internal_error(call: str, error: BaseException) -> None:
    """One warning per call and error type; a loop repeating the same mistake is not a flood.

    Under ``LEZEA_RAISE_INTERNAL=1`` this raises ``error`` instead, so every path that reports an
    internal error (exit hooks, a deferred record on the worker, a scope's exit) fails the suite."""
    if raise_internal():
        raise error
    key = (call, type(error).__name__)
    if key in _reported:
        logger.debug("%s: internal error repeated (%s)", call, error_text(error))
        return
    _reported.add(key)
    logger.warning("%s: internal error in lezea_otel (%s); training continues with less telemetry", call,
                   error_text(error), exc_info=logger.isEnabledFor(logging.DEBUG))


# --- calls that cannot bind ----------------------------------------------------------------------

@functools.cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """The signature the user sees: ``self`` left out, computed once per function."""
    signature = inspect.signature(function)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def _names(items: list[str]) -> str:
    quoted = [repr(item) for item in items]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _mismatch(name: str, signature: inspect.Signature, args: tuple[Any, ...], kwargs: Mapping[str, Any],
              ) -> tuple[str, list[str], str] | None:
    """(kind, parameter names, Python's message) for the first reason the call cannot bind, or None.

    Python's wording, counted without ``self`` (``log_reward() missing 1 required positional
    argument: 'reward'``), where Python's own message would name an internal class."""
    params = list(signature.parameters.values())
    kinds = inspect.Parameter
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in params if p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)}
    if not any(p.kind is kinds.VAR_KEYWORD for p in params):
        keywords = [n for n, p in by_name.items() if p.kind is not kinds.POSITIONAL_ONLY]
        for key in kwargs:
            if key not in keywords:
                close = difflib.get_close_matches(key, keywords, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return "unexpected", [key], f"{name}() got an unexpected keyword argument {key!r}{hint}"
    if not any(p.kind is kinds.VAR_POSITIONAL for p in params) and len(args) > len(positional):
        most = len(positional)
        least = sum(1 for p in positional if p.default is p.empty)
        takes = f"from {least} to {most} positional arguments" if least < most else \
            f"{most} positional argument{'' if most == 1 else 's'}"
        given = f"{len(args)} {'was' if len(args) == 1 else 'were'} given"
        return "too_many", [], f"{name}() takes {takes} but {given}"
    for param in positional[:len(args)]:
        if param.name in kwargs:
            return "multiple", [param.name], f"{name}() got multiple values for argument {param.name!r}"
    for kind, required in (("positional", positional[len(args):]),
                           ("keyword-only", [p for p in params if p.kind is kinds.KEYWORD_ONLY])):
        missing = [p.name for p in required if p.default is p.empty and p.name not in kwargs]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            message = f"{name}() missing {len(missing)} required {kind} argument{plural}: {_names(missing)}"
            return "missing", missing, message
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        return "other", [], f"{name}(): {error}"
    return None


def binding_mistake(function: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: Mapping[str, Any]) -> str | None:
    """Why ``function(self, *args, **kwargs)`` cannot bind, in Python's words; None when it can."""
    signature = _signature(function)
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        found = _mismatch(function.__name__, signature, args, kwargs)
        return found[2] if found else f"{function.__name__}(): the arguments do not match its signature"
    return None


def _mistake(args: tuple[Any, ...], call: str, message: str) -> None:
    owner = getattr(args[0], "_warnings", None) if args else None
    if isinstance(owner, Warnings):  # once per tracker and message, counted in its summary
        owner.mistake(call, message)
    elif (call, message) not in _reported:
        _reported.add((call, message))
        logger.warning("%s", message)


def guarded(default: Any = None, passthrough: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]:
    """Decorate a public call so that nothing it does raises into training code.

    A call that cannot bind is the user's mistake: one warning per distinct mistake, in Python's
    words, and ``default``. An internal error becomes one warning and ``default`` too (called if
    callable; ``SELF`` returns the instance). ``passthrough`` exceptions are the documented ones,
    raised on purpose (``LezeaConfigError`` in strict mode). The hot path pays nothing for this:
    the signature is consulted only after a ``TypeError`` raised by the call itself."""

    def decorate(function: F) -> F:
        call = function.__name__

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except passthrough:
                raise
            except Exception as error:
                # A TypeError with no frame below this one was raised by the call itself, before
                # the body ran: the arguments did not bind, so nothing was recorded.
                tb = error.__traceback__
                mistake = binding_mistake(function, args[1:], kwargs) \
                    if isinstance(error, TypeError) and tb is not None and tb.tb_next is None else None
                if mistake is not None:
                    _mistake(args, call, f"{mistake}; nothing was recorded for this call")
                else:
                    if raise_internal():
                        raise
                    owner = getattr(args[0], "_warnings", None) if args else None
                    if isinstance(owner, Warnings):  # once per tracker, counted in its summary
                        owner.warn(call, f"internal error ({type(error).__name__})",
                                   f"{error_text(error, typed=False)}; "
                                   "training continues with less telemetry")
                    else:
                        report_internal_error(call, error)
                if default is SELF:
                    return args[0] if args else None
                return default() if callable(default) else default

        return wrapper  # type: ignore[return-value]

    return decorate


def repair_call(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                fill: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], list[str]]:
    """Arguments that bind to ``function`` (self excluded), and one message per mistake repaired.

    Unknown keywords and surplus positional arguments are dropped, a keyword repeating a positional
    argument loses, and a missing required argument gets its ``fill`` value (else None)."""
    signature = _signature(function)
    name = function.__qualname__.split(".")[0] if function.__name__ == "__init__" else function.__name__
    args, kwargs, messages = tuple(args), dict(kwargs), []
    for _ in range(len(args) + len(kwargs) + len(signature.parameters) + 1):
        found = _mismatch(name, signature, args, kwargs)
        if found is None:
            break
        kind, which, message = found
        if kind in ("unexpected", "multiple"):
            kwargs.pop(which[0])
            messages.append(f"{message}; "
                            f"{'ignored' if kind == 'unexpected' else 'the keyword one was ignored'}")
        elif kind == "too_many":
            most = sum(1 for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY,
                                                                             p.POSITIONAL_OR_KEYWORD))
            args = args[:most]
            messages.append(f"{message}; the extra ones were ignored")
        elif kind == "missing":
            kwargs.update({parameter: fill.get(parameter) for parameter in which})
            messages.append(f"{message}; using " + ", ".join(f"{p}={fill.get(p)!r}" for p in which))
        else:  # nothing sensible to repair: call with no arguments but the fill values
            args, kwargs = (), dict(fill)
            messages.append(f"{message}; all arguments ignored")
    return args, kwargs, messages


def guarded_constructor(fill: Mapping[str, Any], passthrough: tuple[type[BaseException], ...] = (),
                        ) -> Callable[[F], F]:
    """Decorate ``__init__`` so that construction never raises and always leaves a working object.

    A call that does not bind is repaired (see :func:`repair_call`), one warning per mistake. If
    the body itself fails (our bug; raised under ``LEZEA_RAISE_INTERNAL=1``), it runs once more
    with only ``fill``. The object must keep its ``Warnings`` as ``self._warnings``."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            args, kwargs, messages = repair_call(function, args, kwargs, fill)
            try:
                function(self, *args, **kwargs)
            except passthrough:
                raise
            except Exception as error:
                if raise_internal():
                    raise
                messages.append(f"{type(self).__name__}(): internal error ({error_text(error)}); "
                                f"constructed again from defaults")
                function(self, **fill)
            for message in messages:
                _mistake((self,), type(self).__name__, message)

        return wrapper  # type: ignore[return-value]

    return decorate


def shielded(read: Callable[[], T], fallback: T, warn: Callable[[str, str], None], what: str) -> T:
    """``read()`` of a user's value, or ``fallback`` with one warning when the value raised while read
    (a ``__str__`` that raises, a generator that fails half-way): an odd object costs itself only."""
    try:
        return read()
    except Exception as error:  # noqa: BLE001 - the user's object, not our code, raised
        warn(f"{what} could not be read", f"{error_text(error)}; using {fallback!r}")
        return fallback


def truth(value: Any, what: str, warn: Callable[[str, str], None]) -> bool:
    """``bool(value)``, or False with a warning when its truthiness raises (an array, a proxy)."""
    return shielded(lambda: bool(value), False, warn, what)


# --- values the OTel SDK can encode --------------------------------------------------------------

def encodable_text(text: str) -> str:
    """``text`` as valid UTF-8 (lone surrogates become U+FFFD), without a warning: for what goes to the
    SDK."""
    return valid_text(text, "", ignore)


def encodable_number(value: Any) -> Any:
    """An int outside int64 as a float (the nearest one; +-max float past its range); others as given."""
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        try:
            return float(value)
        except OverflowError:
            return math.copysign(sys.float_info.max, value)
    return value


def encodable_value(value: Any) -> Any:
    """An attribute value the OTLP encoder accepts; a list stays homogeneous (all ints become floats
    when one of them had to)."""
    if isinstance(value, str):
        return encodable_text(value)
    if isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return encodable_number(value)
    if isinstance(value, (list, tuple)):
        items = [encodable_value(item) for item in value]
        if any(type(item) is float for item in items) and any(type(item) is int for item in items):
            items = [float(item) if type(item) is int else item for item in items]
        return items
    return value


def encodable_attributes(attributes: Mapping[Any, Any] | None) -> dict[str, Any]:
    """Attribute keys and values the OTLP encoder accepts (keys as valid UTF-8 text)."""
    if not attributes:
        return {}
    return {encodable_text(key) if isinstance(key, str) else key: encodable_value(value)
            for key, value in attributes.items()}
