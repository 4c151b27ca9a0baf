"""One ordered path for every record: the audit first, then the run state (the exporter reads the audit).

Sync mode (the default) builds each call's record at the call (its values read, its warnings given)
and queues it; the queue is written in call order in batches: by the caller every ``SYNC_BATCH``
records, by the flusher thread within ``FLUSH_INTERVAL_S``, and before anything reads the run. In
async mode the caller only appends the call itself to the deque (far cheaper than
``queue.Queue.put``) and one daemon worker builds and writes it, in call order; when the deque is
full the caller drains it itself under the same lock (backpressure, never loss); when the worker falls
behind (a training thread that holds the GIL, cores that other processes keep busy), the flusher marks
the queue overdue once its oldest call has waited half the flush interval, and the caller's next call
drains it, so a SIGKILL loses at most about the flush interval in async mode too. Each sink is
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

from lezea_otel.audit.record import Record
from lezea_otel.audit.writer import FLUSH_INTERVAL_S, AuditWriter
from lezea_otel.model.run_state import RunState
from lezea_otel.trainer.exit_hooks import after_fork_in_child
from lezea_otel.util.safety import raise_internal, report_internal_error

MAX_QUEUE = 100_000
"""Async mode: past this many queued calls the caller drains the queue itself (backpressure, never loss)."""
SYNC_BATCH = 256
"""Sync mode: records are written in call order in batches of this many (the flusher thread writes a
smaller batch within ``FLUSH_INTERVAL_S``): the training thread pays for one warm batch instead of
each record with the caches its own computation just evicted."""
FLUSHER_BATCH = 32
"""Records a background thread (the flusher, the async worker) writes before it lets the GIL go."""
IDLE_POLL_S = 0.005
OVERDUE_CHECKS = 16
"""The flusher looks at the async queue this many times per flush interval."""
OVERDUE_S = 0.025
"""Async mode: a call queued this long and not yet written makes the queue overdue. The caller then writes
the backlog (about this long's worth of calls, at the writer's pace) and every later call's too while the
writer stays behind, so the records a SIGKILL can lose span about the flush interval at most."""


class Pipeline:
    def __init__(self, audit: AuditWriter, state: RunState, async_mode: bool) -> None:
        self.audit = audit
        self.state = state
        self.disabled = False
        self.sink_failures = 0
        self._lock = threading.RLock()
        self._busy = False  # handling under way on the thread that holds the lock
        self._queue: deque[Record | tuple[str, Callable[..., Record | None], tuple[Any, ...]]] = deque()
        self.deferred = async_mode
        """Async mode (until closed): a submitted call is built later, on the worker."""
        self._batch = 1 if audit.each_line_durable else SYNC_BATCH  # fsync=always: each line at its call
        self._stop = threading.Event()
        self.overdue = False
        """Async mode: the oldest queued call has waited too long; the caller's next call drains the queue."""
        self._handled = 0
        """Queued items handled so far: with the queue's length, how many were ever queued."""
        self._marks: deque[tuple[float, int]] = deque()
        """Async mode: (when, items queued by then) as the flusher saw them, oldest first."""
        self._worker: threading.Thread | None = None
        if async_mode:
            audit.flush_every_s = OVERDUE_S
            self._worker = threading.Thread(target=self._run, name="lezea-otel-worker", daemon=True)
            self._worker.start()
        threading.Thread(target=self._flush_periodically, name="lezea-otel-audit-flush", daemon=True).start()
        after_fork_in_child(self, Pipeline._after_fork_in_child)

    def submit(self, record: Record) -> None:
        if self.disabled:
            return
        self._queue.append(record)
        if len(self._queue) >= (MAX_QUEUE if self.deferred else self._batch):
            self.drain()

    def submit_later(self, call: str, build: Callable[..., Record | None], *args: Any) -> None:
        """Like :meth:`submit`, but the record is built by ``build(*args)``: in async mode on the
        worker, so the caller pays only for the append (checks and warnings happen in call order
        there); in sync mode now, so a warning comes with the call."""
        if self.disabled:
            return
        if self.deferred:
            self._queue.append((call, build, args))
            if self.overdue or len(self._queue) > MAX_QUEUE:
                self._catch_up()
            return
        with self._lock:  # in call order, and one thread at a time through build's bookkeeping
            record = self._build(call, build, args)
            if record is not None:
                self._queue.append(record)
        if len(self._queue) >= self._batch:
            self.drain()

    def defer(self, build: Callable[..., Record], *args: Any) -> None:
        """A record whose building cannot fail or warn (a span's end), built by ``build(*args)`` when
        its batch is written, in call order: the training thread only appends."""
        if self.disabled:
            return
        self._queue.append(("span", build, args))
        if self.overdue or len(self._queue) >= (MAX_QUEUE if self.deferred else self._batch):
            self._catch_up()

    def _catch_up(self) -> None:
        """The caller writes what is queued (the worker fell behind, or the queue is full); the queue stays
        overdue until the flusher sees the worker keep up again."""
        self.drain()
        if not self._marks or self._marks[0][1] <= self._handled:
            self.overdue = False

    def drain(self, limit: int = 0) -> None:
        """Handles everything queued (at most ``limit`` records when given), in order. Re-entered on
        the thread already draining, it returns at once: the drain under way handles what was queued
        meanwhile.

        A record leaves the queue once its line is queued for the file: a signal handler that raises
        in the middle (``sys.exit()`` in the user's SIGTERM handler) leaves it at the head, to be written
        by the next drain (at the latest the exit hook's finalize), and never writes it twice."""
        with self._lock:
            if self._busy:
                return
            self._busy = True
            try:
                queue, audit, state = self._queue, self.audit, self.state
                left = limit or -1
                while queue and left:
                    left -= 1
                    record = queue[0]
                    if isinstance(record, tuple):
                        built = self._build(*record)
                        if built is None:
                            queue.popleft()
                            self._handled += 1
                            continue
                        queue[0] = record = built  # built once, even when what follows is cut short
                    try:  # each sink isolated: a failing run-state update never costs an audit line
                        audit.append(record)
                    except Exception as error:  # noqa: BLE001 - one sink failing must not cost the others
                        queue.popleft()
                        self._handled += 1
                        self._sink_failed("audit", record, error)
                    except BaseException:  # a signal handler raised in the middle: written once it is queued
                        if audit.queued(record):
                            queue.popleft()
                            self._handled += 1
                        raise
                    else:
                        queue.popleft()
                    self._handled += 1
                    try:
                        state.apply(record)
                    except Exception as error:  # noqa: BLE001
                        self._sink_failed("run state", record, error)
                    if audit.each_line_durable or not self._handled % FLUSHER_BATCH:
                        audit.settle()  # a long drain's lines reach the file as they go, not at its end
            finally:
                self._busy = False
                self.audit.settle()

    def _build(self, call: str, build: Callable[..., Record | None], args: tuple[Any, ...]) -> Record | None:
        try:
            return build(*args)
        except Exception as error:  # a bad call costs its own record, nothing else
            if raise_internal():
                raise
            report_internal_error(call, error)
            return None

    def flush(self) -> None:
        """Everything submitted so far reaches the audit file (not yet fsynced)."""
        self.drain()
        with self._lock:
            self.audit.flush()

    def _sink_failed(self, sink: str, record: Record, error: Exception) -> None:
        self.sink_failures += 1
        if raise_internal():
            raise error
        report_internal_error(f"{record.kind} ({sink})", error)

    def _flush_periodically(self) -> None:
        """Every ``FLUSH_INTERVAL_S``: what the caller queued is written (in short batches, the GIL let go
        between them, so a training thread waiting for it waits one batch at most) and reaches the file.
        In async mode the worker writes; this thread watches it keep up (:meth:`_watch_overdue`)."""
        while not self._stop.is_set():
            if self.deferred:
                if self._watch_overdue():
                    break
            else:
                if self._stop.wait(FLUSH_INTERVAL_S):
                    break
                left = len(self._queue)  # queued by now: a caller that goes on queueing writes its own
                while left > 0 and not self.disabled and not self._stop.is_set():
                    self.drain(min(left, FLUSHER_BATCH))
                    left -= FLUSHER_BATCH
                    time.sleep(0)
            with self._lock:
                if not self.disabled:
                    self.audit.flush_if_due()

    def _watch_overdue(self) -> bool:
        """One flush interval of looking at the async queue: each look notes how many items were queued by
        then; when those of a look ``OVERDUE_S`` ago are not all handled yet, the queue is overdue (the
        caller writes). True when the pipeline stops meanwhile."""
        marks = self._marks
        for _ in range(OVERDUE_CHECKS):
            if self._stop.wait(FLUSH_INTERVAL_S / OVERDUE_CHECKS):
                return True
            now, handled = time.monotonic(), self._handled
            marks.append((now, handled + len(self._queue)))
            while marks and marks[0][1] <= handled:  # everything queued by then is written
                marks.popleft()
            if marks and now - marks[0][0] >= OVERDUE_S:
                self.overdue = True
            if self._lock.acquire(blocking=False):  # else a drain under way flushes as it goes
                try:
                    if not self.disabled:
                        self.audit.flush_if_due()
                finally:
                    self._lock.release()
        return False

    def _run(self) -> None:
        """The async worker: short batches, the GIL let go between them, so that a caller never waits
        for more than one batch."""
        while not self._stop.is_set():
            if self._queue:
                self.drain(FLUSHER_BATCH)
                time.sleep(0)
            else:
                time.sleep(IDLE_POLL_S)
        self.drain()

    def close(self, timeout_s: float) -> None:
        """Drain what is queued (within ``timeout_s``) and flush the audit."""
        self._stop.set()
        self.deferred = False  # late calls after finalize are written directly, never left in a queue
        self._batch = 1
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout_s)
        self.drain()
        with self._lock:
            self.audit.close()

    def discard(self) -> None:
        """A run never started: nothing was written, so its audit file and the folders made for it go
        (a folder that holds anything else stays)."""
        self._stop.set()
        with self._lock:
            self.disabled = True
            self.audit.close()
            self.audit.remove_if_empty()

    def _after_fork_in_child(self) -> None:
        # The child must never write the parent's files or queued data; a lock held by the
        # parent's worker at fork time would deadlock it, so nothing here takes the old lock.
        self.disabled = True
        self._queue = deque()
        self._lock = threading.RLock()
        with contextlib.suppress(OSError):
            self.audit.detach_after_fork()
