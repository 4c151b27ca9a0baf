"""Following a run for one destination: read the audits, convert, deliver, and only then commit.

A :class:`Follower` owns, per audit file of the run (its own ``events.jsonl`` and each forked worker's
``workers/<pid>/events.jsonl``, picked up as they appear), a cursor and a converter. Each
:meth:`Follower.poll` reads what the trainer appended, converts it, and hands spans and log records to
the :class:`Destination`; the cursors are committed once the destination took them. A destination that
retries (a collector) holds the batch that failed and offers it again with backoff, reading nothing
new meanwhile: the audit is the spool, and on recovery the backlog goes out in order with its original
timestamps. A destination that does not retry (the local files, test exporters) counts what it could
not take and moves on. Metrics are cumulative: each interval, every series goes out as it stands.

Restarted (a new exporter process, ``lezea-otel export``), a follower rebuilds each converter's state
from the records before its committed cursor, whose output was delivered already, and goes on from
there: nothing acknowledged is sent twice.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .._internal.names import AUDIT_FILE, WORKERS_DIR
from .._internal.readable import error_text
from .._internal.safety import raise_internal
from .cursor import AuditCursor, Position
from .logs import LogRecordExporter, ReadableLogRecord, succeeded
from .records import Kind
from .run import Batch, RunConverter, merge_metrics

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
SCAN_WORKERS_S = 1.0
MAX_CHUNKS_PER_POLL = 8
"""Chunks (about 1 MiB each) read per source and poll: a long backlog goes out as several batches."""


@dataclass
class SignalCounts:
    """Items of one signal: converted from the audit, taken by the destination, refused (counted)."""

    produced: int = 0
    exported: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    """Refused by a destination that does not retry; the audit still holds their records."""


@dataclass
class Destination:
    """Exporters that receive the same data, and whether a refusal is retried.

    ``on_metrics`` also gets each interval's metrics (the Prometheus endpoint's latest values).
    """

    name: str
    spans: Sequence[SpanExporter] = ()
    logs: Sequence[LogRecordExporter] = ()
    metrics: Sequence[MetricExporter] = ()
    retry: bool = False
    on_metrics: Callable[[MetricsData], None] | None = None
    counts: dict[str, SignalCounts] = field(default_factory=lambda: {
        signal: SignalCounts() for signal in ("traces", "metrics", "logs")})

    def send_spans(self, spans: list[ReadableSpan]) -> bool:
        return self._send("traces", spans, [functools.partial(_span_export, e, spans) for e in self.spans])

    def send_logs(self, logs: list[ReadableLogRecord]) -> bool:
        return self._send("logs", logs, [functools.partial(_log_export, e, logs) for e in self.logs])

    def send_metrics(self, data: MetricsData) -> bool:
        if self.on_metrics is not None:
            on_metrics = self.on_metrics
            self._attempt(lambda: on_metrics(data) is None)
        return self._send("metrics", [data], [functools.partial(_metric_export, e, data) for e in self.metrics])

    def shutdown(self) -> None:
        exporters: list[Any] = [*self.spans, *self.logs, *self.metrics]
        for exporter in exporters:
            self._attempt(lambda: exporter.shutdown() is None)  # noqa: B023 - called at once

    def _send(self, signal: str, items: Sequence[Any], exports: list[Callable[[], bool]]) -> bool:
        counts = self.counts[signal]
        ok = all([self._attempt(export) for export in exports])  # every exporter tries, whatever the first did
        if ok:
            counts.exported += len(items)
        else:
            counts.failed_attempts += 1
            if not self.retry:
                counts.dropped += len(items)
        return ok or not self.retry

    @staticmethod
    def _attempt(export: Callable[[], bool]) -> bool:
        try:
            return export()
        except Exception:  # noqa: BLE001 - the gRPC exporter raises on an encoding error: a refusal
            if raise_internal():
                raise
            return False


def _span_export(exporter: SpanExporter, spans: list[ReadableSpan]) -> bool:
    return exporter.export(spans) == SpanExportResult.SUCCESS


def _log_export(exporter: LogRecordExporter, logs: list[ReadableLogRecord]) -> bool:
    return succeeded(exporter.export(logs))


def _metric_export(exporter: MetricExporter, data: MetricsData) -> bool:
    return exporter.export(data) == MetricExportResult.SUCCESS


@dataclass
class _Held:
    """A converted batch not yet taken by a retrying destination, with the positions it reaches."""

    spans: list[ReadableSpan]
    logs: list[ReadableLogRecord]
    positions: dict[Path, Position]


class _Source:
    """One audit file: its cursor and converter, resumed from the committed position."""

    def __init__(self, path: Path, state_path: Path | None) -> None:
        self.cursor = AuditCursor(path, state_path)
        self.converter = RunConverter()
        self.ended = False
        """Its ``experiment_end`` was read."""
        if self.cursor.committed.seq:
            self._catch_up_state(path, self.cursor.committed)

    def _catch_up_state(self, path: Path, committed: Position) -> None:
        replay = AuditCursor(path)
        while True:
            records = [r for r in replay.read() if r.seq <= committed.seq]
            self.converter.skip(records)
            self.ended = self.ended or any(r.kind == Kind.EXPERIMENT_END for r in records)
            if not records or replay.position.seq >= committed.seq:
                break

    def read(self, final: bool) -> Batch:
        batch = Batch()
        for _ in range(MAX_CHUNKS_PER_POLL):
            records = self.cursor.read(final=final)
            if not records:
                break
            self.ended = self.ended or any(r.kind == Kind.EXPERIMENT_END for r in records)
            batch.extend(self.converter.feed(records))
        return batch


class Follower:
    """One run, one destination. Not thread-safe: one thread calls :meth:`poll` (or :meth:`finish`)."""

    def __init__(self, run_dir: Path, destination: Destination, *, state_dir: Path | None,
                 metric_interval_s: float, extra_metrics: Callable[[], MetricsData | None] | None = None,
                 progress: tuple[float, float] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """
        Args:
            progress: (after, every) seconds: markers under scopes open longer (live runs only).
        """
        self.run_dir = run_dir
        self.destination = destination
        self._state_dir = state_dir
        self._interval = metric_interval_s
        self._extra_metrics = extra_metrics
        self._clock = clock
        self._progress = progress
        self._sources: dict[Path, _Source] = {}
        self._held: _Held | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_BACKOFF_S
        self._next_metrics = 0.0
        self._next_scan = 0.0
        self.problems: list[str] = []
        self.fed = False
        """Records past the committed cursors were read (so there are metrics to send)."""

    @property
    def main(self) -> _Source | None:
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

    def poll(self, final: bool = False) -> bool:
        """One round: deliver what was held or appended since; metrics when due. True when data moved."""
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
                self.fed = self.fed or positions[path] != source.cursor.committed
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

    def send_metrics(self) -> None:
        parts = [source.converter.collect(everything=True) for source in self._sources.values()]
        if self._extra_metrics is not None:
            parts.append(self._extra_metrics())
        data = merge_metrics(parts)
        if data is not None:
            self.destination.counts["metrics"].produced += 1
            self.destination.send_metrics(data)

    def report(self) -> dict[str, Any]:
        """Per signal what was produced, exported, refused; what is still held; cursor problems."""
        signals = {signal: asdict(counts) for signal, counts in self.destination.counts.items()}
        if self._held is not None:
            signals["traces"]["held"] = len(self._held.spans)
            signals["logs"]["held"] = len(self._held.logs)
        problems = [*self.problems]
        for source in self._sources.values():
            problems.extend(source.cursor.problems)
            problems.extend(source.converter.problems)
        return {"destination": self.destination.name, "signals": signals, "problems": problems[:100]}

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
                self._sources[path] = _Source(path, self._state_path(path))

    def _state_path(self, path: Path) -> Path | None:
        if self._state_dir is None:
            return None
        relative = path.parent.relative_to(self.run_dir).as_posix().replace("/", "-") or "run"
        return self._state_dir / f"{self.destination.name}-{relative}.json"

    def _deliver(self, held: _Held) -> bool:
        counts = self.destination.counts
        if held is not self._held:
            counts["traces"].produced += len(held.spans)
            counts["logs"].produced += len(held.logs)
        if held.spans and self.destination.send_spans(held.spans):
            held.spans = []
        if held.logs and self.destination.send_logs(held.logs):
            held.logs = []  # the spans went: only the logs are offered again
        if held.spans or held.logs:
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
                except OSError as error:  # the state file: resuming would resend, never lose
                    self._problem(f"cursor of {path} not saved: {error_text(error)}")
        return True

    def _problem(self, text: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(text)
