"""Forked workers end with the run: a DataLoader's ``persistent_workers`` live until the loader is shut
down, often after the run's end, and a worker killed with its pool never writes an end record.

The run holds one pipe. Every forked child keeps its read end and closes its copy of the write end, so
the read end sees end-of-file exactly when the run's own process closes it (at finalize) or dies. A
worker that logged watches that end in a daemon thread and then ends its own record, its open phases
truncated; the run's process waits (bounded) for the workers' end records and folds their records into
its summary (``model.audit_events.fold_workers``), so what they logged is in ``finalize_experiment()``'s
summary as in ``lezea-otel show``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lezea_otel.model.audit_events import fold_workers, has_ended
from lezea_otel.model.layout import worker_audits
from lezea_otel.model.run_state import RunState

WAIT_S = 1.0
"""At most this long, at finalize, for live workers to write their end records."""
POLL_S = 0.01


class WorkerLink:
    """The run's end, as its forked workers see it."""

    def __init__(self) -> None:
        self._read: int | None = None
        self._write: int | None = None

    def open(self) -> None:
        """In the run's own process, at start (the pipe is not inherited across ``exec``)."""
        with contextlib.suppress(OSError):
            self._read, self._write = os.pipe()

    def in_child(self) -> None:
        """In a forked child: only the run's own process may hold the write end."""
        if self._write is not None:
            with contextlib.suppress(OSError):
                os.close(self._write)
            self._write = None

    def watch(self, end: Callable[[], None]) -> None:
        """In a worker that logs: ``end()`` once the run's process ended its run (or died)."""
        read = self._read
        if read is None:
            return

        def wait_for_the_end() -> None:
            with contextlib.suppress(OSError):
                while os.read(read, 1):
                    pass
            end()

        threading.Thread(target=wait_for_the_end, name="lezea-otel-run-end", daemon=True).start()

    def end(self, run_dir: Path, state: RunState, timeout_s: float) -> None:
        """In the run's own process, at finalize: the workers are told, their end records awaited (within
        ``timeout_s``, at most ``WAIT_S``), and what they recorded folded into ``state``."""
        for fd in (self._write, self._read):  # the read end is the workers' (each holds its own copy)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._write = self._read = None
        audits = worker_audits(run_dir)
        deadline = time.monotonic() + min(WAIT_S, timeout_s)
        while audits and not all(has_ended(audit) for audit in audits) and time.monotonic() < deadline:
            time.sleep(POLL_S)  # bounded: a worker that cannot end is read as far as it got
        fold_workers(state, audits)
