"""GPU time of phases (and scopes) from CUDA events, resolved off the training thread.

CUDA work is asynchronous: ``with tracker.span("forward")`` ends when its kernels are *launched*, and
their time shows up in whichever later phase synchronizes (often the loss's ``.item()``). As PyTorch's
profiler and Megatron's timers do, a CUDA event is recorded on the current stream at enter and one at
exit; what the stream did between them is the phase's GPU time. The training thread only records the
two events and appends the phase to a deque. A resolver thread waits for the exit event
(``Event.synchronize`` lets the GIL go) and then writes the phase's record, ``gpu_duration_s`` beside
the wall ``duration_s``: the phase's span ends only once its GPU work has. The training thread never
waits for the GPU unless asked (``sync``).

Nothing here imports torch: events are used only once the process has imported torch and initialised
CUDA (``torch.cuda.is_initialized()``), so a CPU run, a run without torch, and a forked DataLoader worker
(CUDA is unusable after a fork; torch says so) behave exactly as before.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from lezea_otel.trainer.scope_frames import Frame

CHECK_EVERY = 32
"""Until CUDA is initialised, whether it is yet is asked at every this-many-th block (the first one
included): a CPU run that imported torch pays a countdown per block, not a torch call; a GPU run's first
few blocks after CUDA's first use may go untimed on the GPU."""
IDLE_WAIT_S = 0.05
"""The resolver's longest sleep with nothing queued: a phase queued just as it goes to sleep waits this."""


class CudaClock:
    """The torch boundary: CUDA events on the current stream, ``synchronize`` for ``sync`` phases.

    Args:
        enabled: ``LEZEA_GPU_TIMING`` is not ``off``.
        report: called once with a sentence when CUDA events fail (they are not used again).
    """

    def __init__(self, enabled: bool, report: Callable[[str], None]) -> None:
        self.enabled = enabled
        self._report = report
        self._cuda: Any = None  # torch.cuda once it is initialised
        self._countdown = 1

    def _ready(self) -> Any:
        """``torch.cuda`` once the process has initialised CUDA, else None."""
        cuda = self._cuda
        if cuda is not None:
            return cuda
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        try:
            if not torch.cuda.is_initialized():
                return None
        except Exception:  # noqa: BLE001 - a torch half-imported, or one without cuda: no GPU time
            return None
        self._cuda = torch.cuda
        return self._cuda

    def start(self) -> Any:
        """An event recorded now on the current stream, or None (no CUDA yet, or timing is off)."""
        if not self.enabled:
            return None
        cuda = self._cuda
        if cuda is None:
            self._countdown -= 1
            if self._countdown > 0:
                return None
            self._countdown = CHECK_EVERY
            cuda = self._ready()
            if cuda is None:
                return None
        return self._record(cuda)

    def _record(self, cuda: Any) -> Any:
        try:
            event = cuda.Event(enable_timing=True)
            event.record()
            return event
        except Exception as error:  # noqa: BLE001 - a CUDA error: stop timing, never break the step
            self._fail(error)
            return None

    def stop(self) -> Any:
        """The exit event, recorded now on the current stream (None if it could not be)."""
        return self._record(self._cuda) if self.enabled and self._cuda is not None else None

    def synchronize(self) -> None:
        """Wait for the current stream's work (a ``sync`` phase, before its end time is taken)."""
        cuda = self._ready()
        if cuda is not None:
            try:
                cuda.current_stream().synchronize()
            except Exception as error:  # noqa: BLE001
                self._fail(error)

    def allocator(self) -> dict[str, dict[str, int]] | None:
        """The CUDA caching allocator's bytes per device (``allocated``, ``reserved``, ``peak``), None
        before CUDA is initialised. Only this process can read them: the exporter gets them as records."""
        cuda = self._ready()
        if cuda is None:
            return None
        try:
            return {str(index): {"allocated": int(cuda.memory_allocated(index)),
                                 "reserved": int(cuda.memory_reserved(index)),
                                 "peak": int(cuda.max_memory_allocated(index))}
                    for index in range(cuda.device_count())}
        except Exception:  # noqa: BLE001 - a broken CUDA context: no reading this time
            return None

    def after_fork(self) -> None:
        self._cuda, self._countdown = None, 1  # a forked child cannot use its parent's CUDA context

    def _fail(self, error: Exception) -> None:
        self.enabled = False
        self._report(f"CUDA events failed ({type(error).__name__}: {error}); phases are no longer timed "
                     "on the GPU")


class Resolver:
    """Phases whose exit event has not completed yet, and the thread that waits for them.

    Args:
        write: writes a finished frame's record (``Pipeline.defer`` of ``Frame.end_record``); called
            once per frame, from the resolver thread or from :meth:`drain`.
    """

    def __init__(self, write: Callable[[Frame, int, Any, str | None], None]) -> None:
        self._write = write
        self._pending: deque[tuple[Frame, Any, int, Any, str | None]] = deque()
        self._lock = threading.Condition()
        """Held while a frame is written (the resolver and a drain at finalize never both write one);
        notified when the queue empties."""
        self._wake = threading.Event()
        self._idle = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self.resolved = 0
        self.unresolved = 0

    def add(self, frame: Frame, stop: Any, end_ns: int, failure: Any, truncated_by: str | None) -> None:
        """Queue a frame: its record is written once ``stop`` (its exit event) has completed."""
        if self._closed:
            self._give_up((frame, stop, end_ns, failure, truncated_by))
            return
        self._pending.append((frame, stop, end_ns, failure, truncated_by))
        if self._thread is None:
            self._start()
        elif self._idle:
            self._wake.set()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lezea-otel-gpu-resolver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = self._pending
        while not self._closed:
            if not pending:
                self._idle = True
                if not pending:  # queued between the check and the flag: go on without sleeping
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                self._idle = False
                continue
            item = pending[0]
            frame, stop, *_rest = item
            gpu_s: float | None = None
            try:
                stop.synchronize()  # lets the GIL go: the training thread runs on meanwhile
                gpu_s = frame.cuda_start.elapsed_time(stop) / 1000.0
            except Exception:  # noqa: BLE001 - an event that cannot be read: the phase has no GPU time
                gpu_s = None
            with self._lock:
                if not pending or pending[0] is not item:
                    continue  # a drain wrote it meanwhile, marked unresolved
                pending.popleft()
                if gpu_s is None:
                    frame.gpu_unresolved = True
                    self.unresolved += 1
                else:
                    frame.gpu_duration_s = gpu_s
                    self.resolved += 1
                self._write(frame, *item[2:])
                if not pending:
                    self._lock.notify_all()

    def drain(self, timeout_s: float) -> None:
        """At finalize: wait up to ``timeout_s`` for the queued frames, then write the rest marked
        unresolved (``gpu_unresolved``), so that no phase is lost to a GPU that never finishes."""
        thread = self._thread
        with self._lock:
            if thread is not None and thread.is_alive():
                self._lock.wait_for(lambda: not self._pending, timeout_s)
            self._closed = True
            self._wake.set()
            while self._pending:
                self._give_up(self._pending.popleft())

    def _give_up(self, item: tuple[Frame, Any, int, Any, str | None]) -> None:
        frame = item[0]
        frame.gpu_unresolved = True
        self.unresolved += 1
        self._write(frame, *item[2:])

    def after_fork(self) -> None:
        """A forked child: its parent's queue is the parent's; no thread runs here."""
        self._pending = deque()
        self._lock = threading.Condition()
        self._wake = threading.Event()
        self._thread, self._idle, self._closed = None, False, False
