"""Runs that were never finalized still end properly: at normal exit, after an uncaught exception,
on SIGTERM, and in forked workers (a ``multiprocessing`` pool's ``terminate()`` included).

One ``atexit`` handler, one chained ``sys.excepthook`` and one chained SIGTERM handler for the whole
process, installed on the first ``start()``; trackers are held weakly. Fork hooks live here too:
another point in a process's life where a run must be handed over cleanly.

A signal handler runs between two bytecodes of the main thread, wherever that thread was: perhaps
inside one of our own calls, half-way through a line of the audit or holding a lock it would then
wait on forever. So a handler that finds the main thread inside a lezea_otel call never ends the
run from there: it notes the request, the call finishes undisturbed, and the request runs the
moment that call returns (:func:`defer`). Outside our calls it runs at once. The same holds for a
user's own signal handler that calls ``finalize_experiment()``, and for Ctrl-C: its
``KeyboardInterrupt`` is raised as our call returns, never half-way through a scope's exit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import CodeType, FrameType, FunctionType, MethodType, TracebackType
from typing import Any

from lezea_otel.util.safety import report_internal_error

Finalize = Callable[[Any, str, BaseException | None], None]

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_signals_installed = False  # only the main thread can install them: the first start() there does
_lock = threading.Lock()
uncaught: BaseException | None = None
WATCH_LIMIT_S = 30.0  # the fallback watcher gives up on a call that has not returned by then


def register(tracker: Any, finalize: Finalize, forked_worker: bool = False) -> None:
    global _installed, _signals_installed
    if forked_worker:
        # multiprocessing ends its children with os._exit (no atexit), after running these
        import multiprocessing.util

        multiprocessing.util.Finalize(None, _end_worker, args=(weakref.ref(tracker), finalize),
                                      exitpriority=10)
    with _lock:
        _live.add(tracker)
        signals = not _signals_installed and threading.current_thread() is threading.main_thread()
        _signals_installed = _signals_installed or signals
        installed, _installed = _installed, True
    if signals:
        _install_sigterm(finalize)
        _install_sigint()
    if installed:
        return
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        global uncaught
        uncaught = error
        previous(kind, error, tb)

    sys.excepthook = excepthook

    def at_exit() -> None:
        for live in list(_live):
            _isolated(finalize, live, "atexit", uncaught)

    atexit.register(at_exit)


def unregister(tracker: Any) -> None:
    _live.discard(tracker)


def after_fork_in_child(owner: Any, method: Callable[[Any], None]) -> None:
    """Runs ``method(owner)`` in every forked child; ``owner`` is held weakly (the hook never keeps it
    alive)."""
    reference = weakref.ref(owner)

    def hook() -> None:
        live = reference()
        if live is not None:
            method(live)

    os.register_at_fork(after_in_child=hook)


def _isolated(finalize: Finalize, tracker: Any, ended_by: str, error: BaseException | None) -> None:
    try:
        finalize(tracker, ended_by, error)
    except Exception as failure:  # noqa: BLE001 - never turn an exit into a traceback
        report_internal_error(ended_by, failure)


def _end_worker(tracker: weakref.ref[Any], finalize: Finalize) -> None:
    live = tracker()
    if live is not None:
        _isolated(finalize, live, "worker_exit", None)


# --- where the thread a signal interrupted is --------------------------------------------------

@functools.cache
def _user_code_hosts() -> frozenset[CodeType]:
    """Our frames that run the user's code for as long as it likes: a function decorated with
    ``@tracker.span(...)`` runs inside one. Such a frame is not "inside one of our calls"."""
    from lezea_otel.trainer.scopes import TracedBlock

    return frozenset(const for const in TracedBlock.__call__.__code__.co_consts
                     if isinstance(const, CodeType))


_OUR_PACKAGES = ("lezea_otel.trainer.", "lezea_otel.model.", "lezea_otel.util.", "lezea_otel.config.")
"""Where the training thread runs our code (the exporter side never runs on it)."""


def _ours(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__")
    if not isinstance(name, str) or name == __name__:
        return False  # the exit machinery itself is where deferred work runs, never what it waits for
    if name != "lezea_otel.tracker" and not name.startswith(_OUR_PACKAGES):
        return False
    return frame.f_code not in _user_code_hosts()


def call_in_progress(frame: FrameType | None) -> FrameType | None:
    """The outermost frame of a lezea_otel call on the stack whose top is ``frame``, or None.

    Everything such a call does (the OTel SDK, ``threading``, a user's ``__float__``) runs inside
    that frame, so when it returns, no lock or write of ours is left half-done on this thread."""
    outermost = None
    while frame is not None:
        if _ours(frame):
            outermost = frame
        frame = frame.f_back
    return outermost


def nested_call(frame: FrameType | None) -> FrameType | None:
    """For a call of ours made at ``frame``: the call of ours that it interrupted (from a signal
    handler, or a callback), or None. The frames of the call itself are passed over first."""
    while frame is not None and _ours(frame):
        frame = frame.f_back
    return call_in_progress(frame)


# --- work that waits until an interrupted call returns --------------------------------------------

_waiting: dict[int, list[Callable[[], None]]] = {}


def defer(call: FrameType, action: Callable[[], None], elsewhere: Callable[[], None] | None = None) -> None:
    """Run ``action`` on this thread as soon as ``call`` (a frame of this thread) returns.

    A hook on this thread sees the return: a profile function (chained to one set from Python), or,
    where a profiler in C holds that slot (cProfile), a trace function on that frame alone; either is
    removed at once. Where both slots are held by C code (cProfile and coverage), a watcher thread
    polls the stack instead and, once the call has left it, runs ``elsewhere`` (default ``action``)."""
    ident = threading.get_ident()
    waiting = _waiting.get(ident)
    if waiting is not None:
        waiting.append(action)  # one return runs them all, in order
    elif _on_return(call, functools.partial(_run_waiting, ident)):
        _waiting[ident] = [action]
    else:
        _watch(ident, call, elsewhere or action)


def _on_return(call: FrameType, run: Callable[[], None]) -> bool:
    """Arrange ``run()`` for the moment ``call`` returns (or unwinds); False when no hook can be set."""
    previous = sys.getprofile()
    if previous is None or isinstance(previous, (FunctionType, MethodType)):
        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if previous is not None:
                previous(frame, event, arg)
            if event == "return" and frame is call:
                sys.setprofile(previous)
                run()

        sys.setprofile(profile)
        return True
    if sys.gettrace() is None:
        def trace(frame: FrameType, event: str, arg: Any) -> Any:
            if event != "return":
                return trace
            sys.settrace(None)
            frame.f_trace = None
            run()
            return None

        call.f_trace_lines = False
        call.f_trace = trace
        sys.settrace(_no_trace)  # tracing on for this thread; only ``call`` has a trace function
        return True
    return False


def _no_trace(frame: FrameType, event: str, arg: Any) -> None:
    return None


def _run_waiting(ident: int) -> None:
    raised: BaseException | None = None
    for action in _waiting.pop(ident, []):
        try:
            action()
        except BaseException as error:  # noqa: BLE001 - an interrupt raised here reaches the caller, after the rest
            raised = raised or error
    if raised is not None:
        raise raised


def _watch(ident: int, call: FrameType, action: Callable[[], None]) -> None:
    def on_stack() -> bool:
        frame = sys._current_frames().get(ident)
        while frame is not None:
            if frame is call:
                return True
            frame = frame.f_back
        return False

    def watch() -> None:
        deadline = time.monotonic() + WATCH_LIMIT_S
        while on_stack() and time.monotonic() < deadline:
            time.sleep(0.001)  # nothing to wait on: another thread's stack is only seen by looking
        action()

    threading.Thread(target=watch, name="lezea-otel-exit-watch", daemon=True).start()


# --- SIGTERM ---------------------------------------------------------------------------------------

_terminating = False
_ended_elsewhere = False  # the watcher thread ended the runs; the re-sent signal only ends the process


def _install_sigterm(finalize: Finalize) -> None:
    """A scheduler's preemption ends the run as ``terminated``; then the process ends as it would have."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        global _ended_elsewhere
        interrupted = frame if frame is not None else sys._getframe(1)
        if _ended_elsewhere:
            _ended_elsewhere = False
            _chain(previous, signum, interrupted)
            return
        call = call_in_progress(interrupted)
        if call is None:
            _terminate(finalize, previous, signum, interrupted)
        else:
            defer(call, functools.partial(_terminate, finalize, previous, signum, interrupted),
                  functools.partial(_end_then_resend, finalize, signum, threading.get_ident()))

    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, on_sigterm)


def _terminate(finalize: Finalize, previous: Any, signum: int, frame: FrameType | None) -> None:
    global _terminating
    if _terminating:
        return  # a second signal while the first one ends the runs: the first one goes on to the end
    _terminating = True
    try:
        _end_runs(finalize)
    finally:
        _terminating = False
    _chain(previous, signum, frame)


def _end_runs(finalize: Finalize) -> None:
    for live in list(_live):
        _isolated(finalize, live, "sigterm", None)


def _end_then_resend(finalize: Finalize, signum: int, ident: int) -> None:
    """On the watcher thread: end the runs (safe from any thread), then let the main thread end the
    process as the signal would have (the previous handler runs there, as handlers do)."""
    global _ended_elsewhere
    _end_runs(finalize)
    _ended_elsewhere = True
    signal.pthread_kill(ident, signum)


def _chain(previous: Any, signum: int, frame: FrameType | None) -> None:
    if callable(previous):
        previous(signum, frame)  # the user's own handler keeps working
    elif previous != signal.SIG_IGN:  # the default action (or a handler set outside Python): die of it
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


# --- Ctrl-C ---------------------------------------------------------------------------------------

_interrupt_pending = False


def _install_sigint() -> None:
    """Ctrl-C raises ``KeyboardInterrupt`` as usual, but never inside one of our calls, where it would
    cut a scope's exit or a line in half: there it is raised the moment that call returns. A second
    Ctrl-C before then is raised at once. A handler of the user's own is left alone."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        global _interrupt_pending
        interrupted = frame if frame is not None else sys._getframe(1)
        call = None if _interrupt_pending else call_in_progress(interrupted)
        if call is None:
            _interrupt_pending = False
            signal.default_int_handler(signum, interrupted)  # raises KeyboardInterrupt right here
        _interrupt_pending = True
        defer(call, _interrupt, functools.partial(signal.pthread_kill, threading.get_ident(), signum))

    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, on_sigint)


def _interrupt() -> None:
    global _interrupt_pending
    _interrupt_pending = False
    raise KeyboardInterrupt


def _reset_in_child() -> None:
    """A forked child starts with no deferred work and no ending under way (those were the parent's
    threads)."""
    global _terminating, _ended_elsewhere, _interrupt_pending
    _waiting.clear()  # (the signal handlers, installed by the parent, stay)
    _terminating = _ended_elsewhere = _interrupt_pending = False


os.register_at_fork(after_in_child=_reset_in_child)
