"""Runs that were never finalized still end properly: at normal exit, or after an uncaught exception.

One ``atexit`` handler and one chained ``sys.excepthook`` for the whole process, installed on the
first ``start()``; trackers are held weakly.
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .safety import report_internal_error

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_lock = threading.Lock()
uncaught: BaseException | None = None


def register(tracker: Any, finalize: Callable[[Any, str, BaseException | None], None]) -> None:
    global _installed
    with _lock:
        _live.add(tracker)
        if _installed:
            return
        _installed = True
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        global uncaught
        uncaught = error
        previous(kind, error, tb)

    sys.excepthook = excepthook

    def at_exit() -> None:
        for live in list(_live):
            try:
                finalize(live, "atexit", uncaught)
            except Exception as error:  # noqa: BLE001 - never turn an exit into a traceback
                report_internal_error("atexit", error)

    atexit.register(at_exit)


def unregister(tracker: Any) -> None:
    _live.discard(tracker)
