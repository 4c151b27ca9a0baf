"""Long scopes and phases are visible before they end.

A span is exported only when it ends, so an hour-long scope is invisible in Tempo for an hour.
Past a threshold, a daemon thread adds a short ``lezea.progress`` child span to each open scope
at a fixed cadence: it ends at once, so it is exported with the next batch, and it says how long
the scope has run and how many training steps happened inside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from . import names
from .safety import report_internal_error


class ProgressWatch:
    def __init__(self, open_frames: Callable[[], list[Any]], start_span: Callable[..., Any],
                 end_span: Callable[[Any], None], steps: Callable[[], int], after_s: float, every_s: float) -> None:
        self._open_frames = open_frames
        self._start_span = start_span
        self._end_span = end_span
        self._steps = steps
        self._after_ns = int(after_s * 1e9)
        self._every_ns = int(every_s * 1e9)
        self._last_marker: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lezea-otel-progress", daemon=True)
        self.markers = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _run(self) -> None:
        while not self._stop.wait(min(self._every_ns, self._after_ns) / 1e9 / 2):
            try:
                self.check(time.time_ns())
            except Exception as error:  # noqa: BLE001 - progress is a nicety, never a reason to stop
                report_internal_error("progress markers", error)

    def check(self, now_ns: int) -> None:
        frames = self._open_frames()
        if len(self._last_marker) > len(frames):  # scopes that ended since: forget them (ids are reused)
            open_ids = {id(frame) for frame in frames}
            self._last_marker = {k: v for k, v in self._last_marker.items() if k in open_ids}
        for frame in frames:
            elapsed = now_ns - frame.start_ns
            last = self._last_marker.get(id(frame), frame.start_ns)
            if frame.ended or elapsed < self._after_ns or now_ns - last < self._every_ns:
                continue
            self._last_marker[id(frame)] = now_ns
            marker = self._start_span(names.PROGRESS_SPAN_NAME, {
                names.SCOPE_PATH: "/".join(frame.path) or frame.ident, names.PROGRESS_ELAPSED: elapsed / 1e9,
                names.PROGRESS_STEPS: self._steps() - frame.steps_at_enter}, frame.span)
            self._end_span(marker)
            self.markers += 1
