"""Following a run for one destination: read the audits, convert, deliver, and only then commit.

A :class:`Follower` owns, per audit file of the run (its own ``events.jsonl`` and each forked worker's
``workers/<pid>/events.jsonl``, picked up as they appear), a cursor and a converter. Each
:meth:`Follower.poll` reads what the trainer appended, converts it, and hands spans and log records to
the :class:`Destination`; the cursors are committed once the destination took them. A destination that
retries (a collector) holds the batch that failed and offers it again with backoff, reading nothing
new meanwhile: the audit is the spool, and on recovery the backlog goes out in order with its original
timestamps. A destination that does not retry (the local files, test exporters) counts what it could
not take and moves on. Metrics are cumulative: each interval, every series goes out as it stands.

A collector that is up but keeps refusing one batch (HTTP 400, ``INVALID_ARGUMENT``: malformed, too
large) would hold everything behind it forever. After each refusal the follower sends the collector an
empty request of that signal: if it takes that, it is up and refuses this content. Refused so
``refused_for_good_after`` times in a row, the batch is offered in halves, and halves of halves: what
the collector takes goes out, the single items it still refuses are counted ``rejected`` and skipped
(the audit keeps them; ``lezea-otel export --all`` resends them). A collector that refuses everything,
the empty request too (down, 503, 429, ``UNAVAILABLE``), is waited for: nothing is ever rejected then.

Restarted (a new exporter process, ``lezea-otel export``), a follower rebuilds each converter's state
from the records before its committed cursor, whose output was delivered already, and goes on from
there: nothing acknowledged is sent twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from lezea_otel import semconv as names
from lezea_otel.exporter.convert import Batch, merge_metrics
from lezea_otel.exporter.cursor import Position
from lezea_otel.exporter.destination import Destination
from lezea_otel.exporter.logs import ReadableLogRecord
from lezea_otel.exporter.source import Source
from lezea_otel.exporter.spans import Windows
from lezea_otel.semconv import AUDIT_FILE, WORKERS_DIR
from lezea_otel.util.readable import error_text

__all__ = ["Destination", "Follower", "wind_down"]  # Destination: where it was defined first

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
SCAN_WORKERS_S = 1.0
REFUSED_FOR_GOOD_AFTER = 5
"""Refusals in a row, the collector answering, before a live batch is split (with the backoff: 7.5 s)."""
STALL_S = 1.0
"""At the end, a collector that takes nothing for this long (down, refusing, hanging) is given up on."""


@dataclass
class _Held:
    """A converted batch not yet taken by a retrying destination, with the positions it reaches."""

    spans: list[ReadableSpan]
    logs: list[ReadableLogRecord]
    positions: dict[Path, Position]
    refusals: dict[str, int] = field(default_factory=lambda: {"traces": 0, "logs": 0})
    """Per signal, the refusals in a row while the collector took an empty request."""
    marked: set[str] = field(default_factory=set)
    """Signals whose part went while the other's is held: marked taken beside the cursor."""


_ITEM = {"traces": "span", "logs": "log record"}


class Follower:
    """One run, one destination. Not thread-safe: one thread calls :meth:`poll` (or :meth:`finish`)."""

    def __init__(self, run_dir: Path, destination: Destination, *, state_dir: Path | None,
                 metric_interval_s: float, extra_metrics: Callable[[], MetricsData | None] | None = None,
                 progress: tuple[float, float] | None = None, clock: Callable[[], float] = time.monotonic,
                 refused_for_good_after: int = REFUSED_FOR_GOOD_AFTER,
                 windows: Windows | None = None) -> None:
        """
        Args:
            progress: (after, every) seconds: markers under scopes open longer (live runs only).
            refused_for_good_after: refusals of one batch in a row, the collector answering, before it is
                split and what is still refused skipped (see the module's docstring).
        """
        self.run_dir = run_dir
        self.destination = destination
        self._refused_for_good_after = max(1, refused_for_good_after)
        self._stopped = False
        self._state_dir = state_dir
        self._interval = metric_interval_s
        self._extra_metrics = extra_metrics
        self._clock = clock
        self._progress = progress
        self._windows = windows
        self._sources: dict[Path, Source] = {}
        self._held: _Held | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_BACKOFF_S
        self._next_metrics = 0.0 if metric_interval_s != float("inf") else float("inf")  # export: at the end
        self._next_scan = 0.0
        self.problems: list[str] = []
        self.fed = False
        """Records past the committed cursors were read (so there are metrics to send)."""
        self._metrics_done = False
        """The last metrics went out after the run's end was delivered: the collector has its final values."""

    @property
    def main(self) -> Source | None:
        return self._sources.get(self.run_dir / AUDIT_FILE)

    @property
    def resource(self) -> Resource | None:
        """The trainer's resource, once its ``experiment_start`` was read."""
        main = self.main
        return main.converter.resource if main is not None else None

    @property
    def ended(self) -> bool:
        """The run's end record was read and everything before it delivered."""
        main = self.main
        return main is not None and main.ended and self._held is None

    @property
    def end_time_ns(self) -> int | None:
        """When the trainer wrote its end record (its finalize waits from then on), once read."""
        main = self.main
        return main.end_ns if main is not None else None

    @property
    def failing(self) -> bool:
        """A batch is held: its destination did not take it at the last attempt."""
        return self._held is not None

    @property
    def refused(self) -> bool:
        """A batch is held that the collector refused while it took an empty request (not just down)."""
        held = self._held
        return held is not None and any(held.refusals.values())

    def stop_trying(self) -> None:
        """Give up on this destination (the close's bound is reached; another thread may call it): its
        exporters are shut down, which ends one waiting to retry, and nothing more is sent (what it
        acknowledged meanwhile is still committed). What it did not take stays in the audit
        (``left_in_audit``; ``lezea-otel export`` sends it)."""
        self._stopped = True
        self.destination.shutdown()

    def poll(self, final: bool = False) -> bool:
        """One round: deliver what was held or appended since; metrics when due. True when data moved.

        A held batch is offered again only when its backoff is over (at once with ``final``); until then
        a round costs a clock read, so a follower polled every few milliseconds never spins."""
        if self._stopped:
            return False
        now = self._clock()
        self._scan(now, final)
        moved = False
        if self._held is not None:
            if now < self._retry_at and not final:
                return False
            moved = self._deliver(self._held)
        if self._held is None:
            batch, positions = Batch(), {}
            for path, source in list(self._sources.items()):
                batch.extend(source.read(final))
                positions[path] = source.cursor.position
                if positions[path] != source.cursor.committed:
                    self.fed, self._metrics_done = True, False
            if batch.spans or batch.logs or any(
                    positions[p] != s.cursor.committed for p, s in self._sources.items()):
                moved = self._deliver(_Held(batch.spans, batch.logs, positions)) or moved
        if self._progress is not None and self._held is None:
            markers = Batch()
            for source in self._sources.values():
                markers.extend(source.converter.progress(time.time_ns(), *self._progress))
            if markers.spans:
                moved = self._deliver(_Held(markers.spans, [], {})) or moved
        if now >= self._next_metrics and self.fed:
            self._next_metrics = now + self._interval
            self.send_metrics()
        return moved

    def finish(self, crashed: bool, end_ns: int | None = None) -> None:
        """The last round: torn tails taken, a crashed run's open spans truncated, final metrics sent
        (unless nothing new was read: a second ``export`` of a delivered run sends nothing)."""
        if self._stopped:
            return
        self.poll(final=True)
        if crashed:
            self.fed = True
            for source in self._sources.values():
                if not source.ended:
                    source.ended = True
                    batch = source.converter.end_crashed(end_ns)
                    held = _Held(batch.spans, [], {})
                    if not self._deliver(held):
                        self._deliver(held)  # one more try; what is refused again stays counted
        if self.fed:
            self.send_metrics()

    def current_metrics(self) -> MetricsData | None:
        """Every series as it stands now (records, observers, heartbeat), sent nowhere."""
        parts = [source.converter.collect(everything=True) for source in self._sources.values()]
        if self._extra_metrics is not None:
            parts.append(self._extra_metrics())
        return merge_metrics(parts)

    def send_metrics(self) -> None:
        complete = self.ended  # before collecting: what is collected then holds everything
        data = self.current_metrics()
        if data is not None and not self._stopped:
            if self.destination.metrics:
                self.destination.counts["metrics"].produced += 1
            self._metrics_done = self.destination.send_metrics(data) and complete

    def report(self) -> dict[str, Any]:
        """Per signal what was produced, exported, refused; what is still held; cursor problems."""
        signals = {signal: asdict(counts) for signal, counts in self.destination.counts.items()
                   if self.destination.takes(signal)}
        if self._held is not None:
            for signal, held in (("traces", self._held.spans), ("logs", self._held.logs)):
                if signal in signals:
                    signals[signal]["held"] = len(held)
        # cumulative: 1 while the final values are not there
        if self.destination.retry and "metrics" in signals:
            signals["metrics"]["held"] = int(self.fed and not self._metrics_done)
        problems = [*self.problems]
        for source in self._sources.values():
            problems.extend(source.cursor.problems)
            problems.extend(source.converter.problems)
        withheld = sum(source.converter.withheld for source in self._sources.values())
        return {"destination": self.destination.name, "signals": signals, "problems": problems[:100],
                "done": self.ended, **({"withheld_spans": withheld} if withheld else {})}

    def left(self) -> dict[str, int]:
        """Spans and log records produced and not taken, when the destination gets them: held for a
        retry, or left in the audit once given up on (``lezea-otel export`` sends them)."""
        left = {}
        for signal in ("traces", "logs"):
            if self.destination.takes(signal):
                c = self.destination.counts[signal]
                left[signal] = max(0, c.produced - c.exported - c.dropped - c.rejected)
        return left

    def lag(self) -> tuple[int, float]:
        """(records, seconds) the destination is behind the audit files: records written and not taken,
        and the most any file's newest record written is ahead of its newest taken."""
        records, seconds = 0, 0.0
        for source in list(self._sources.values()):
            behind, behind_s = source.cursor.behind(source.taken_ns)
            records, seconds = records + behind, max(seconds, behind_s)
        return records, seconds

    # --- internals ------------------------------------------------------------------------------

    def _scan(self, now: float, final: bool) -> None:
        """The run's audit, then each worker's as it appears (cheap: once a second, and at the end)."""
        if now < self._next_scan and not final and self._sources:
            return
        self._next_scan = now + SCAN_WORKERS_S
        paths = [self.run_dir / AUDIT_FILE]
        workers = self.run_dir / WORKERS_DIR
        try:
            if workers.is_dir():
                paths.extend(sorted(workers.glob(f"*/{AUDIT_FILE}")))
        except OSError as error:
            self._problem(f"{workers}: {error_text(error)}")
        for path in paths:
            if path not in self._sources:
                self._sources[path] = Source(path, self._state_path(path), self._windows)

    def _state_path(self, path: Path) -> Path | None:
        if self._state_dir is None:
            return None
        relative = names.MAIN_AUDIT if path.parent == self.run_dir else \
            path.parent.relative_to(self.run_dir).as_posix().replace("/", "-")
        return self._state_dir / names.CURSOR_FILE.format(destination=self.destination.key, audit=relative)

    def _deliver(self, held: _Held) -> bool:
        counts = self.destination.counts
        if held is not self._held:
            held.spans = held.spans if self.destination.spans else []  # a signal it does not get: not counted
            held.logs = held.logs if self.destination.logs else []
            counts["traces"].produced += len(held.spans)
            counts["logs"].produced += len(held.logs)
        if held.spans:
            held.spans = self._offer("traces", held.spans, held)
        if held.logs:
            # the spans went: only the logs are offered again
            held.logs = self._offer("logs", held.logs, held)
        if held.spans or held.logs:
            for signal, left in (("traces", held.spans), ("logs", held.logs)):
                if not left and signal not in held.marked:
                    held.marked.add(signal)
                    self._mark_taken(signal, held)
            self._held = held
            self._retry_at = self._clock() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            return False
        self._held = None
        self._backoff = FIRST_BACKOFF_S
        for path, position in held.positions.items():
            source = self._sources.get(path)
            if source is not None and position != source.cursor.committed:
                try:
                    source.cursor.commit(position)
                    source.committed(position)
                except OSError as error:  # the state file: resuming would resend, never lose
                    self._problem(f"cursor of {path} not saved: {error_text(error)}")
        return True

    def _mark_taken(self, signal: str, held: _Held) -> None:
        for path, position in held.positions.items():
            source = self._sources.get(path)
            if source is not None and position.seq > source.cursor.committed.seq:
                try:
                    source.mark_taken(signal, position.seq)
                except OSError as error:  # resuming would send that signal's part again, never lose it
                    self._problem(f"delivery mark of {path} not saved: {error_text(error)}")

    def _send(self, signal: str, items: list[Any]) -> bool:
        if self._stopped:
            return False
        return self.destination.send_spans(items) if signal == "traces" else self.destination.send_logs(items)

    def _offer(self, signal: str, items: list[Any], held: _Held) -> list[Any]:
        """One attempt at ``items``; what is still to deliver (all of it, unless refused for good)."""
        if self._send(signal, items):
            held.refusals[signal] = 0
            return []
        if not self.destination.retry:
            return []  # counted as dropped
        if self._stopped or not self.destination.answers(signal):
            held.refusals[signal] = 0  # down, or refusing everything (503, 429): waited for, never rejected
            return items
        held.refusals[signal] += 1
        if held.refusals[signal] < self._refused_for_good_after:
            return items
        held.refusals[signal] = 0
        rejected = self.destination.counts[signal].rejected
        left = self._isolate(signal, items)
        rejected = self.destination.counts[signal].rejected - rejected
        if rejected:
            self._problem(f"the collector refused {rejected} {_ITEM[signal]}(s) for good while taking "
                          "other data: skipped; the audit keeps them (`lezea-otel export --all` resends "
                          "the run)")
        return left

    def _isolate(self, signal: str, items: list[Any]) -> list[Any]:
        """``items`` are refused for good as a whole: their halves are offered, and the halves of a half
        refused again, down to single items, which are rejected. About 2 log2(n) requests per bad item.
        Returns what is left to hold: the collector stopped answering on the way (then nothing is
        rejected)."""
        if len(items) == 1:
            self.destination.counts[signal].rejected += 1
            return []
        half = len(items) // 2
        parts = [items[:half], items[half:]]
        for index, part in enumerate(parts):
            if self._send(signal, part):
                continue
            if self._stopped or not self.destination.answers(signal):
                return [item for rest in parts[index:] for item in rest]
            left = self._isolate(signal, part)
            if left:
                return left + [item for rest in parts[index + 1:] for item in rest]
        return []

    def _problem(self, text: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(text)


def wind_down(pairs: Sequence[tuple[Follower, threading.Thread]], timeout_s: float,
              stall_s: float = STALL_S) -> bool:
    """Wait, within ``timeout_s``, for each follower's thread (told to finish) to deliver to the end.

    A destination that does not retry (the local files) has the whole bound. One that retries (a
    collector) has it while it takes something at least every ``stall_s``; taking nothing for that long
    (down, refusing, hanging) it is given up on (:meth:`Follower.stop_trying`): a dead collector costs
    the caller about ``stall_s``, and what it did not take stays in the audit, counted in the report.
    True when every follower delivered to the end.
    """
    began = time.monotonic()
    deadline = began + timeout_s
    complete = True
    for follower, thread in pairs:
        while thread.is_alive():
            now = time.monotonic()
            if now >= deadline or (follower.destination.retry
                                   and now - max(began, follower.destination.last_taken) >= stall_s):
                break
            thread.join(min(0.02, deadline - now))
        if thread.is_alive():
            complete = False
            follower.stop_trying()
            thread.join(max(0.0, min(0.2, deadline - time.monotonic())))  # one waiting to retry ends at once
    return complete and not any(thread.is_alive() for _follower, thread in pairs)
