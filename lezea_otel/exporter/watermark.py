"""The trainer's peak memory over any stretch, from the kernel's RSS high-water mark, read from outside.

The observers sample the process tree every few seconds, so a phase that touched 400 MiB between two
samples would report what the last sample saw. The kernel keeps a high-water mark of each process's RSS
(``VmHWM`` in ``/proc/<pid>/status``) that every page touched raises, and writing ``5`` to
``/proc/<pid>/clear_refs`` resets it to the current RSS. Every ``EVERY_S`` the exporter reads the mark
and resets it: each reading is the exact peak of the interval since the one before, spikes included, and
the training thread pays nothing. A scope's or phase's peak is the largest reading of the intervals its
stretch overlaps: exact for what it touched, blurred by at most an interval at its edges (a phase right
after a spike that was freed as the phase before it ended can carry that spike).

Its one effect on the trainer: its own ``ru_maxrss`` (``VmHWM``) reads the peak of the last interval, not
of the whole run (``LEZEA_PHASE_MEMORY=false`` leaves it alone; the run's own peak is kept here).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time

EVERY_S = 0.02
"""Between two readings: the resolution at a block's edges, for about 0.1 % of a core."""
LIMIT = 8192
"""Intervals kept; when full, the older half is merged pairwise (the larger peak kept), so an old stretch
keeps its peak, coarser at its edges."""
_RESET = b"5"


class Watermark:
    """Readings of one process's high-water mark, each the peak of the interval since the one before.

    Args:
        pid: the trainer process.
        every_s: between two readings (a thread of its own).
    """

    def __init__(self, pid: int, every_s: float = EVERY_S) -> None:
        self._every = every_s
        self._status = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._clear = os.open(f"/proc/{pid}/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self._status)
            raise
        self._ends: list[int] = []
        self._peaks: list[int] = []
        self._last_ns = self._first_ns = time.time_ns()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.run_peak = 0
        """The largest reading: the process's peak over the whole run (which its own mark no longer says)."""
        self._reset()
        self._thread = threading.Thread(target=self._run, name="lezea-otel-watermark", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, pid: int) -> Watermark | None:
        """A watermark of ``pid``, or None where the kernel offers none (not Linux, a hardened ``/proc``)."""
        try:
            return cls(pid)
        except OSError:
            return None

    def _high_water(self) -> int:
        text = os.pread(self._status, 4096, 0)
        start = text.find(b"VmHWM:")
        if start < 0:
            raise OSError("no VmHWM in /proc/<pid>/status")
        return int(text[start + 6:text.index(b"kB", start)]) * 1024

    def _reset(self) -> None:
        os.write(self._clear, _RESET)

    def read(self) -> None:
        """One reading now: the mark, then the reset; the interval ends at the reset."""
        with self._lock:
            if self._stop.is_set():
                return
            peak = self._high_water()
            self._reset()
            now = time.time_ns()
            self._ends.append(now)
            self._peaks.append(peak)
            self._last_ns = now
            self.run_peak = max(self.run_peak, peak)
            if len(self._ends) > LIMIT:
                half = len(self._ends) // 2
                ends, peaks = self._ends[:half], self._peaks[:half]
                self._ends = ends[1::2] + ([ends[-1]] if len(ends) % 2 else []) + self._ends[half:]
                self._peaks = [max(peaks[i:i + 2]) for i in range(0, len(peaks), 2)] + self._peaks[half:]

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.read()
            except OSError:  # the trainer is gone: the readings so far stay
                return

    def peak(self, start_ns: int, end_ns: int) -> int | None:
        """The largest reading of the intervals overlapping ``[start_ns, end_ns]`` (read once more first:
        :meth:`covering`); None when none does: a stretch before the exporter began watching (it starts a
        moment after the trainer), or after the last reading (the trainer gone before the exporter reached
        its records)."""
        with self._lock:
            first = bisect.bisect_left(self._ends, start_ns)
            if first >= len(self._ends) or end_ns <= self._first_ns:  # after the last reading, or before
                return None
            last = bisect.bisect_left(self._ends, end_ns)
            return max(self._peaks[first:last + 1])

    def covering(self, end_ns: int) -> None:
        """A reading now, unless one after ``end_ns`` exists already."""
        if self._last_ns < end_ns:
            with contextlib.suppress(OSError):
                self.read()

    def close(self) -> None:
        """A last reading, then the files go; the readings stay for windows closed later."""
        with contextlib.suppress(OSError):
            self.read()
        with self._lock:
            self._stop.set()
            for fd in (self._status, self._clear):
                with contextlib.suppress(OSError):
                    os.close(fd)
