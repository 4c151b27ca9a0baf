"""What a scope or phase measures beside its wall time: its GPU time (``gpu_timing``) and an NVTX range
for Nsight Systems, each a few torch calls on the training thread, and nothing imported that the user's
process has not imported already. (Its peak memory is read by the exporter, from outside:
``exporter.watermark``; the training thread pays nothing for it.)
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from lezea_otel.config.settings import Settings
from lezea_otel.trainer.gpu_timing import CudaClock, Resolver
from lezea_otel.trainer.scope_frames import Frame

_log = logging.getLogger("lezea_otel")


class Nvtx:
    """NVTX ranges through ``torch.cuda.nvtx`` when torch is imported and built with CUDA."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._nvtx: Any = None

    def push(self, name: str) -> bool:
        """Open a range; True when one was opened (and must be popped)."""
        if not self._enabled:
            return False
        nvtx = self._nvtx
        if nvtx is None:
            torch = sys.modules.get("torch")
            if torch is None:
                self._off("LEZEA_NVTX is on but torch is not imported; no NVTX ranges are emitted")
                return False
            nvtx = self._nvtx = torch.cuda.nvtx
        try:
            nvtx.range_push(name)
        except Exception as error:  # noqa: BLE001 - a CPU build: "NVTX functions not installed"
            self._off(f"NVTX ranges are not available ({type(error).__name__}: {error}); none are emitted")
            return False
        return True

    def pop(self) -> None:
        with contextlib.suppress(Exception):  # popped by the user's own code already: nothing to undo
            self._nvtx.range_pop()

    def _off(self, sentence: str) -> None:
        self._enabled = False
        _log.info(sentence)  # once: the ranges are off from now on


class Probes:
    """The measurements a block takes at enter and exit, and where its record goes once they are in.

    Args:
        settings: ``gpu_timing``, ``gpu_sync`` and ``nvtx``.
        write: writes a block's end record (``Pipeline.defer`` of ``Frame.end_record``).
        report: one warning sentence (CUDA events failed).
    """

    def __init__(self, settings: Settings, write: Callable[[Frame, int, Any, str | None], None],
                 report: Callable[[str], None]) -> None:
        self.clock = CudaClock(settings.gpu_timing != "off", report)
        self._scopes_on_gpu = settings.gpu_timing == "scopes"
        self.sync_all = settings.gpu_sync
        """``LEZEA_GPU_SYNC``: every phase waits for its GPU work at exit."""
        self.nvtx = Nvtx(settings.nvtx)
        self.resolver = Resolver(write)
        self._write = write
        self.allocator_due_ns = 0
        """When the CUDA allocator is read next (``log_training_step`` compares its time with it)."""
        self._allocator_every_ns = int(settings.observe_interval_s * 1e9)

    def enter(self, frame: Frame, name: str) -> None:
        """Just before the block's start time is taken."""
        frame.nvtx = self.nvtx.push(name)
        if frame.level is None or self._scopes_on_gpu:
            frame.cuda_start = self.clock.start()

    def exit(self, frame: Frame, end_ns: int, failure: Any, truncated_by: str | None) -> None:
        """The block has ended at ``end_ns``: its record is written now, or by the resolver once its GPU
        work has completed."""
        if frame.nvtx:
            frame.nvtx = False
            self.nvtx.pop()
        if frame.cuda_start is not None:
            stop = self.clock.stop()
            if stop is not None:
                self.resolver.add(frame, stop, end_ns, failure, truncated_by)
                return
            frame.gpu_unresolved = True
        self._write(frame, end_ns, failure, truncated_by)

    def discard(self, frame: Frame) -> None:
        """A block that ends without a record (``iterate``'s wait for an item that never came)."""
        if frame.nvtx:
            frame.nvtx = False
            self.nvtx.pop()

    def allocator(self, now_ns: int) -> dict[str, dict[str, int]] | None:
        """The CUDA allocator's bytes per device, at most once per ``LEZEA_OBSERVE_INTERVAL``."""
        self.allocator_due_ns = now_ns + self._allocator_every_ns
        return self.clock.allocator()

    def synchronize(self) -> None:
        """A ``sync`` phase: wait for the GPU before its end time is taken."""
        self.clock.synchronize()

    def drain(self, timeout_s: float) -> None:
        """At finalize: the phases still waiting for their GPU work, within ``timeout_s``."""
        self.resolver.drain(timeout_s)

    def after_fork(self) -> None:
        self.clock.after_fork()
        self.resolver.after_fork()
