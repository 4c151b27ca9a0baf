"""A stand-in for the CUDA side of torch (``torch.cuda.Event``, ``current_stream``, ``is_initialized``,
``nvtx``) on a machine without a GPU, installed onto the real (CPU) torch module.

It behaves as CUDA does where the tracker can notice: work launched on the stream runs in order and in
real time after it is launched (``launch(seconds)``), so an event recorded after it completes only once
that work has; ``query()`` says whether it has, ``synchronize()`` waits for it, ``elapsed_time()`` is the
stream time between two events in milliseconds and raises torch's errors for events that were never
recorded (``Both events must be recorded before calculating elapsed time.``) or have not completed
(``CUDA error: device not ready``). ``hold()`` stalls the GPU (nothing completes until ``release()``), for
a resolver that has to wait as long as the test wants.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any


class FakeGpu:
    """One device with one stream; times are ``time.monotonic()`` seconds."""

    def __init__(self) -> None:
        self._stream_end = 0.0  # when the work launched so far will have run
        self._held = False
        self._changed = threading.Condition()
        self.events_recorded = 0
        self.synchronizations = 0
        self.nvtx: list[tuple[str, str]] = []
        """("push", name) and ("pop", "") in the order they were called."""
        self.allocated = 0
        """What the caching allocator hands out (bytes); ``reserved`` what it holds from the driver."""
        self.reserved = 0
        self.peak = 0

    def allocate(self, size: int) -> None:
        """As a tensor of ``size`` bytes does: the allocator reserves in 2 MiB blocks and keeps them."""
        self.allocated += size
        self.peak = max(self.peak, self.allocated)
        self.reserved = max(self.reserved, -(-self.allocated // 2**21) * 2**21)

    def free(self, size: int) -> None:
        self.allocated -= size

    def launch(self, seconds: float) -> None:
        """A kernel of ``seconds`` queued on the stream (returns at once, as a launch does)."""
        self._stream_end = max(self._stream_end, time.monotonic()) + seconds

    def hold(self) -> None:
        with self._changed:
            self._held = True

    def release(self) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()

    def _stamp(self) -> float:
        return max(self._stream_end, time.monotonic())

    def _done(self, stamp: float) -> bool:
        return not self._held and time.monotonic() >= stamp

    def _wait(self, stamp: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self._held)
        delay = stamp - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the device running the queued work, not a test waiting for a thread


class FakeEvent:
    """``torch.cuda.Event(enable_timing=...)`` of one :class:`FakeGpu`."""

    gpu: FakeGpu

    def __init__(self, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False) -> None:
        self.enable_timing = enable_timing
        self._stamp: float | None = None

    def record(self, stream: Any = None) -> None:
        self._stamp = self.gpu._stamp()
        self.gpu.events_recorded += 1

    def query(self) -> bool:
        return self._stamp is None or self.gpu._done(self._stamp)

    def synchronize(self) -> None:
        if self._stamp is not None:
            self.gpu._wait(self._stamp)

    def elapsed_time(self, end_event: FakeEvent) -> float:
        if self._stamp is None or end_event._stamp is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("CUDA error: invalid resource handle")
        if not (self.gpu._done(self._stamp) and self.gpu._done(end_event._stamp)):
            raise RuntimeError("CUDA error: device not ready")
        return (end_event._stamp - self._stamp) * 1000.0


class _Stream:
    def __init__(self, gpu: FakeGpu) -> None:
        self._gpu = gpu

    def synchronize(self) -> None:
        self._gpu.synchronizations += 1
        self._gpu._wait(self._gpu._stamp())


@contextlib.contextmanager
def installed(initialized: bool = True) -> Iterator[FakeGpu]:
    """The double on ``torch.cuda`` while the block runs (``initialized``: as after CUDA's first use)."""
    import torch

    gpu = FakeGpu()
    event = type("Event", (FakeEvent,), {"gpu": gpu})
    cuda, nvtx = torch.cuda, torch.cuda.nvtx
    doubled = ("Event", "is_initialized", "current_stream", "device_count", "memory_allocated",
               "memory_reserved", "max_memory_allocated")
    saved = {name: getattr(cuda, name) for name in doubled}
    saved_nvtx = (nvtx.range_push, nvtx.range_pop)
    cuda.Event = event  # type: ignore[misc]
    cuda.is_initialized = lambda: initialized  # type: ignore[assignment]
    cuda.current_stream = lambda device=None: _Stream(gpu)  # type: ignore[assignment]
    cuda.device_count = lambda: 1  # type: ignore[assignment]
    cuda.memory_allocated = lambda device=None: gpu.allocated  # type: ignore[assignment]
    cuda.memory_reserved = lambda device=None: gpu.reserved  # type: ignore[assignment]
    cuda.max_memory_allocated = lambda device=None: gpu.peak  # type: ignore[assignment]
    nvtx.range_push = lambda name: gpu.nvtx.append(("push", name))  # type: ignore[assignment]
    nvtx.range_pop = lambda: gpu.nvtx.append(("pop", ""))  # type: ignore[assignment]
    try:
        yield gpu
    finally:
        for name, value in saved.items():
            setattr(cuda, name, value)
        nvtx.range_push, nvtx.range_pop = saved_nvtx
