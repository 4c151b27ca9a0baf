"""SIGTERM while the main thread waits inside native code: the run still ends, and the process still dies.

Python runs a signal handler only when the main thread is back in the interpreter. A rank that waits
inside gloo or NCCL for a peer that died (the usual state of the survivors when torchrun tears a
worker group down to restart it) never gets there: without a handler SIGTERM would have killed it at
once, with ours it lingers until the launcher's SIGKILL (30 s later for torchrun) and loses its end
record. So the C-level handler's wakeup byte (``signal.set_wakeup_fd``) is watched by a thread; when
the Python handler has not run within ``GRACE_S``, the thread ends the runs itself and ends the process
with status ``128 + SIGTERM``, as a shell reports death by SIGTERM.

Only where SIGTERM's action was the default one (a user's own handler is never overridden) and no other
library holds the wakeup fd (asyncio's loop sets its own: then this watch steps aside).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

GRACE_S = 1.0
"""How long the Python handler may take to start before the watch ends the run in its place."""
POLL_S = 0.01

_handled = 0
"""Python handler runs, counted by a plain assignment: a signal handler takes no lock (one that
interrupted the lock's holder on its own thread would wait for itself forever)."""
_fds: tuple[int, int] | None = None


def install(end_runs: Callable[[], None], ours: Callable[[], bool]) -> bool:
    """From the main thread; True when the watch runs. ``ours()``: whether SIGTERM's handler is still the
    one that calls :func:`handled` (a handler the user sets later owns SIGTERM: the watch then steps
    aside)."""
    global _fds
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read)
        os.close(write)
        return False
    if previous != -1:  # another library's: put back, and step aside
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        return False
    _fds = (read, write)
    threading.Thread(target=_watch, args=(read, end_runs, ours), name="lezea-otel-sigterm",
                     daemon=True).start()
    os.register_at_fork(after_in_child=_in_child)
    return True


def handled() -> None:
    """The Python handler runs: the watch has nothing to do for this signal."""
    global _handled
    _handled += 1


def _watch(read: int, end_runs: Callable[[], None], ours: Callable[[], bool]) -> None:
    while True:
        try:
            received = os.read(read, 64)
        except OSError:
            return
        if not received:
            return
        if signal.SIGTERM not in received or not ours():
            continue
        # Once the Python handler has run for a SIGTERM, it ends the process itself: the watch is done.
        deadline = time.monotonic() + GRACE_S
        while not _handled and ours() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if _handled or not ours():
            return
        with contextlib.suppress(Exception):  # the main thread is stuck outside the interpreter
            end_runs()
        os._exit(128 + signal.SIGTERM)


def _in_child() -> None:
    """A forked child must not write its signals into the parent's watch."""
    global _fds
    if _fds is None:
        return
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for fd in _fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _fds = None
