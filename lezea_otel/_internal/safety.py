"""The safety net: nothing in lezea_otel may raise into training code.

Bad input is reported once per (call, problem) on the ``lezea_otel`` logger; a loop that logs a
NaN every step gets one warning, not a million. Our own bugs are caught at the public boundary
and reported, so a telemetry fault costs telemetry, never the run. Set ``LEZEA_RAISE_INTERNAL=1``
(our test suite does) to turn internal errors back into exceptions.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger("lezea_otel")

F = TypeVar("F", bound=Callable[..., Any])


class Warnings:
    """One warning per distinct (call, problem); everything after that is counted, not printed."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.count = 0
        self.messages: list[str] = []

    def warn(self, call: str, problem: str, detail: str = "") -> None:
        """Report ``problem`` for ``call``; ``detail`` varies per occurrence and is not deduplicated."""
        with self._lock:
            self.count += 1
            key = (call, problem)
            if key in self._seen:
                return
            self._seen.add(key)
            message = f"{call}: {problem}{': ' + detail if detail else ''}"
            if len(self.messages) < 1000:
                self.messages.append(message)
        logger.warning("%s", message)


def raise_internal() -> bool:
    return os.environ.get("LEZEA_RAISE_INTERNAL", "") == "1"


_reported: set[tuple[str, str]] = set()
SELF = object()
"""``guarded(default=SELF)``: on an internal error return the object the method was called on."""


def report_internal_error(call: str, error: BaseException) -> None:
    """One warning per call and error type; a loop repeating the same mistake is not a flood."""
    key = (call, type(error).__name__)
    if key in _reported:
        logger.debug("%s: internal error repeated (%s: %s)", call, type(error).__name__, error)
        return
    _reported.add(key)
    logger.warning(
        "%s: internal error in lezea_otel (%s: %s); training continues with less telemetry",
        call,
        type(error).__name__,
        error,
        exc_info=logger.isEnabledFor(logging.DEBUG),
    )


def guarded(default: Any = None, passthrough: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]:
    """Decorate a public call so that an internal error (wrong arity included) becomes one warning
    and ``default`` (called if callable; ``SELF`` returns the instance). ``passthrough`` exceptions
    are the documented ones, raised on purpose (``LezeaConfigError`` in strict mode)."""

    def decorate(function: F) -> F:
        call = function.__name__

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except passthrough:
                raise
            except Exception as error:  # noqa: BLE001 - the whole point
                if raise_internal():
                    raise
                owner = getattr(args[0], "_warnings", None) if args else None
                if isinstance(owner, Warnings):  # once per tracker, counted in its summary
                    owner.warn(call, f"internal error ({type(error).__name__})",
                               f"{error}; training continues with less telemetry")
                else:
                    report_internal_error(call, error)
                if default is SELF:
                    return args[0] if args else None
                return default() if callable(default) else default

        return wrapper  # type: ignore[return-value]

    return decorate
