"""One ordered path for every record: the audit first, then the run state (the exporter reads the audit).

Synchronous by default. In async mode the caller only appends to a deque (far cheaper than
``queue.Queue.put``) and one daemon worker drains it in batches, in call order; when the deque is
full the caller drains it itself under the same lock (backpressure, never loss). Each sink is
isolated: a failing run-state update never costs an audit line.

Reentrant on its own thread: a record submitted while that thread is already handling one (from a
signal handler that interrupted it, or a callback inside a sink) is queued, and the interrupted
handling writes it next, so no sink is ever entered half-way through another record.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from lezea_otel.model.audit import FLUSH_INTERVAL_S, AuditWriter
from lezea_otel.model.record import Record
from lezea_otel.model.run_state import RunState
from lezea_otel.trainer.exit_hooks import after_fork_in_child
from lezea_otel.util.safety import raise_internal, report_internal_error

MAX_QUEUE = 100_000
IDLE_POLL_S = 0.005


class Pipeline:
    def __init__(self, audit: AuditWriter, state: RunState, async_mode: bool) -> None:
        self.audit = audit
        self.state = state
        self.disabled = False
        self.sink_failures = 0
        self._lock = threading.RLock()
        self._busy = False  # handling under way on the thread that holds the lock
        self._queue: deque[Record | tuple[str, Callable[..., Record | None], tuple[Any, ...]]] = deque()
        self._async = async_mode
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        if async_mode:
            self._worker = threading.Thread(target=self._run, name="lezea-otel-worker", daemon=True)
            self._worker.start()
        threading.Thread(target=self._flush_periodically, name="lezea-otel-audit-flush", daemon=True).start()
        after_fork_in_child(self, Pipeline._after_fork_in_child)

    @property
    def deferred(self) -> bool:
        """Whether a submitted call is built later, on the worker (async mode, until closed)."""
        return self._async

    def submit(self, record: Record) -> None:
        if self.disabled:
            return
        if not self._async:
            with self._lock:
                if not self._busy and not self._queue:  # the common case: handled at once, nothing queued
                    self._busy = True
                    try:
                        self._handle(record)
                    finally:
                        self._busy = False
                    if not self._queue:
                        return
                else:
                    self._queue.append(record)
            self.drain()
            return
        self._queue.append(record)
        if len(self._queue) > MAX_QUEUE or not self._async:  # full, or closed since the check above
            self.drain()

    def submit_later(self, call: str, build: Callable[..., Record | None], *args: Any) -> None:
        """Like :meth:`submit`, but the record is built by ``build(*args)`` on the worker: in async
        mode the caller pays only for the append; checks and warnings happen in call order there."""
        if self.disabled:
            return
        if not self._async:
            with self._lock:
                if not self._busy and not self._queue:
                    self._busy = True
                    try:
                        self._build_and_handle(call, build, args)
                    finally:
                        self._busy = False
                    if not self._queue:
                        return
                else:
                    self._queue.append((call, build, args))
            self.drain()
            return
        self._queue.append((call, build, args))
        if not self._async or len(self._queue) > MAX_QUEUE:  # full, or closed since the check above
            self.drain()

    def drain(self) -> None:
        """Handles everything queued, in order. Re-entered on the thread already draining, it
        returns at once: the drain under way handles what was queued meanwhile."""
        with self._lock:
            if self._busy:
                return
            self._busy = True
            try:
                queue = self._queue
                while queue:
                    item = queue.popleft()
                    if isinstance(item, tuple):
                        self._build_and_handle(*item)
                    else:
                        self._handle(item)
            finally:
                self._busy = False

    def _build_and_handle(self, call: str, build: Callable[..., Record | None],
                          args: tuple[Any, ...]) -> None:
        try:
            record = build(*args)
        except Exception as error:  # a bad call costs its own record, nothing else
            if raise_internal():
                raise
            report_internal_error(call, error)
            return
        if record is not None:
            self._handle(record)

    def flush(self) -> None:
        """Everything submitted so far reaches the audit file (not yet fsynced)."""
        self.drain()
        with self._lock:
            self.audit.flush()

    def _handle(self, record: Record) -> None:
        try:
            self.audit.write(record)
        except Exception as error:  # noqa: BLE001 - one sink failing must not cost the others
            self._sink_failed("audit", record, error)
        try:
            self.state.apply(record)
        except Exception as error:  # noqa: BLE001
            self._sink_failed("run state", record, error)

    def _sink_failed(self, sink: str, record: Record, error: Exception) -> None:
        self.sink_failures += 1
        if raise_internal():
            raise error
        report_internal_error(f"{record.kind} ({sink})", error)

    def _flush_periodically(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            with self._lock:
                if not self.disabled:
                    self.audit.flush_if_due()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._queue:
                self.drain()
            else:
                time.sleep(IDLE_POLL_S)
        self.drain()

    def close(self, timeout_s: float) -> None:
        """Drain what is queued (within ``timeout_s``) and flush the audit."""
        self._stop.set()
        self._async = False  # late calls after finalize are written directly, never left in a queue
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout_s)
        self.drain()
        with self._lock:
            self.audit.close()

    def _after_fork_in_child(self) -> None:
        # The child must never write the parent's files or queued data; a lock held by the
        # parent's worker at fork time would deadlock it, so nothing here takes the old lock.
        self.disabled = True
        self._queue = deque()
        self._lock = threading.RLock()
        with contextlib.suppress(OSError):
            self.audit.detach_after_fork()
