"""Runs that were never finalized still end properly: at normal exit, or after an uncaught exception.

One ``atexit`` handler and one chained ``sys.excepthook`` for the whole process, installed on the
first ``start()``; trackers are held weakly. Fork hooks live here too: another point in a process's
life where a run must be handed over cleanly.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from .safety import report_internal_error

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_lock = threading.Lock()
uncaught: BaseException | None = None


def register(tracker: Any, finalize: Callable[[Any, str, BaseException | None], None],
             forked_worker: bool = False) -> None:
    global _installed
    if forked_worker:
        # multiprocessing ends its children with os._exit (no atexit), after running these
        import multiprocessing.util

        multiprocessing.util.Finalize(None, _end_worker, args=(weakref.ref(tracker), finalize), exitpriority=10)
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
    _install_sigterm(finalize)


def after_fork_in_child(owner: Any, method: Callable[[Any], None]) -> None:
    """Runs ``method(owner)`` in every forked child; ``owner`` is held weakly (the hook never keeps it alive)."""
    reference = weakref.ref(owner)

    def hook() -> None:
        live = reference()
        if live is not None:
            method(live)

    os.register_at_fork(after_in_child=hook)


def _end_worker(tracker: weakref.ref[Any], finalize: Callable[[Any, str, BaseException | None], None]) -> None:
    live = tracker()
    if live is not None:
        try:
            finalize(live, "worker_exit", None)
        except Exception as error:  # noqa: BLE001
            report_internal_error("worker exit", error)


def _install_sigterm(finalize: Callable[[Any, str, BaseException | None], None]) -> None:
    """A scheduler's preemption ends the run as ``terminated``; then the process ends as it would have."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be installed from the main thread
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        for live in list(_live):
            try:
                finalize(live, "sigterm", None)
            except Exception as error:  # noqa: BLE001
                report_internal_error("SIGTERM", error)
        if callable(previous):
            previous(signum, frame)  # the user's own handler keeps working
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):
        pass


def unregister(tracker: Any) -> None:
    _live.discard(tracker)
