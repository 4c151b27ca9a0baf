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


def report_internal_error(call: str, error: BaseException) -> None:
    logger.warning(
        "%s: internal error in lezea_otel (%s: %s); training continues with less telemetry",
        call,
        type(error).__name__,
        error,
        exc_info=logger.isEnabledFor(logging.DEBUG),
    )


def guarded(default: Any = None) -> Callable[[F], F]:
    """Decorate a public call so that an internal error becomes one warning and ``default``."""

    def decorate(function: F) -> F:
        call = function.__name__

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - the whole point
                if raise_internal():
                    raise
                report_internal_error(call, error)
                return default() if callable(default) else default

        return wrapper  # type: ignore[return-value]

    return decorate
