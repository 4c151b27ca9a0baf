"""One audit file's records -> spans, log records and metrics: the three builders behind one call.

The builders are created at the file's first record (its ``experiment_start``: the resource and the
experiment's identity come from it). All state is a function of the records fed so far, so an
exporter that restarts resumes exactly by feeding the records before its committed cursor to
:meth:`RunConverter.skip` (the output is dropped: it was delivered) and the rest to :meth:`feed`.
A record that cannot be converted costs itself only: it is counted, the others go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import Metric, MetricsData, ResourceMetrics, ScopeMetrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from lezea_otel import semconv as names
from lezea_otel.audit.record import Kind
from lezea_otel.exporter.logs import LogBuilder, ReadableLogRecord
from lezea_otel.exporter.metrics import DEFAULT_MAX_NAMES, MetricsBuilder
from lezea_otel.exporter.records import AuditRecord, constant_attributes, run_resource
from lezea_otel.exporter.spans import SpanBuilder, Windows
from lezea_otel.util.readable import error_text
from lezea_otel.util.safety import raise_internal

_NO_START = AuditRecord(seq=0, time_ns=0, kind=Kind.EXPERIMENT_START, step=None, scope="", trace_id=0,
                        span_id=0)


@dataclass(slots=True)
class Batch:
    """What a stretch of records finished: spans and log records, in record order."""

    spans: list[ReadableSpan] = field(default_factory=list)
    logs: list[ReadableLogRecord] = field(default_factory=list)

    def extend(self, other: Batch) -> None:
        self.spans.extend(other.spans)
        self.logs.extend(other.logs)


class RunConverter:
    """Converts the records of one audit file (a run, or one forked worker of it), fed in seq order."""

    def __init__(self, windows: Windows | None = None) -> None:
        """``windows``: per-scope resource summaries measured live (the exporter's observers)."""
        self.windows = windows
        self._builders: tuple[SpanBuilder, LogBuilder, MetricsBuilder] | None = None
        self.resource: Resource | None = None
        self.last_time_ns = 0
        self.failed = 0
        """Records whose conversion failed (a malformed line from another version): skipped, counted."""
        self.withheld = 0
        """Scope and phase spans of a rank that does not export them (``LEZEA_SPAN_RANKS``): counted."""
        self._root_only: int | None = None
        """The root span's id, where only it (and its started marker) is exported."""
        self.problems: list[str] = []

    def feed(self, records: Iterable[AuditRecord]) -> Batch:
        batch = Batch()
        for record in records:
            spans, logs, metrics = self._builders or self._start(record)
            self.last_time_ns = max(self.last_time_ns, record.time_ns)
            try:
                finished = spans.feed(record)
                emitted = logs.feed(record)
                metrics.feed(record)
            except Exception as error:
                if raise_internal():
                    raise
                self.failed += 1
                if len(self.problems) < 100:
                    self.problems.append(f"record {record.seq} ({record.kind}): {error_text(error)}; skipped")
                continue
            if finished and self._root_only is not None:
                kept = [span for span in finished if _rooted(span, self._root_only)]
                self.withheld += len(finished) - len(kept)
                finished = kept
            if finished:
                batch.spans.extend(finished)
            if emitted:
                batch.logs.extend(emitted)
        return batch

    def skip(self, records: Iterable[AuditRecord]) -> None:
        """Rebuild the state of records already delivered (resuming): their output is dropped, and no
        resource window is measured for them (they are past)."""
        windows, self.windows = self.windows, None
        if self._builders is not None:
            self._builders[0].windows = None
        try:
            self.feed(records)
            self.collect()
        finally:
            self.windows = windows
            if self._builders is not None:
                self._builders[0].windows = windows

    def collect(self, everything: bool = False) -> MetricsData | None:
        """The metric points changed since the last call (all of them with ``everything``)."""
        return self._builders[2].collect(everything) if self._builders is not None else None

    def progress(self, now_ns: int, after_s: float, every_s: float) -> Batch:
        """Progress markers of the scopes open long enough (see :meth:`SpanBuilder.progress`)."""
        if self._builders is None:
            return Batch()
        return Batch(self._builders[0].progress(now_ns, int(after_s * 1e9), int(every_s * 1e9)), [])

    def end_crashed(self, end_ns: int | None = None) -> Batch:
        """The trainer is gone without its end record: open scopes end truncated, the root as ``crashed``."""
        if self._builders is None:
            return Batch()
        return Batch(self._builders[0].end_run(end_ns or self.last_time_ns, "crashed", "crash"), [])

    def _start(self, record: AuditRecord) -> tuple[SpanBuilder, LogBuilder, MetricsBuilder]:
        """The builders, from the file's first record (read without its start: a bare identity)."""
        start = record if record.kind == Kind.EXPERIMENT_START else _NO_START
        self.resource = run_resource(start)
        constant = constant_attributes(start)
        if start.data.get("spans") is False:
            self._root_only = start.span_id
        self._builders = (SpanBuilder(self.resource, windows=self.windows),
                          LogBuilder(self.resource, constant),
                          MetricsBuilder(self.resource, constant, max_names=DEFAULT_MAX_NAMES))
        return self._builders


def _rooted(span: ReadableSpan, root_id: int) -> bool:
    """The run's root span, or its started marker."""
    if span.context is not None and span.context.span_id == root_id:
        return True
    return span.name == names.STARTED_SPAN_NAME and span.parent is not None and span.parent.span_id == root_id


def merge_metrics(parts: Iterable[MetricsData | None]) -> MetricsData | None:
    """Several ``MetricsData`` as one, with each (resource, scope) and each metric name once: the proto
    encoder would otherwise send only the last of two equal resources or scopes."""
    grouped: dict[Resource, dict[InstrumentationScope, dict[str, Metric]]] = {}
    for part in parts:
        for resource_metrics in part.resource_metrics if part is not None else ():
            scopes = grouped.setdefault(resource_metrics.resource, {})
            for scope_metrics in resource_metrics.scope_metrics:
                by_name = scopes.setdefault(scope_metrics.scope, {})
                for metric in scope_metrics.metrics:
                    known = by_name.get(metric.name)
                    if known is not None and type(known.data) is type(metric.data):
                        points: list[Any] = [*known.data.data_points, *metric.data.data_points]
                        data: Any = dataclasses.replace(known.data, data_points=points)  # type: ignore[arg-type]
                        metric = dataclasses.replace(known, data=data)
                    by_name[metric.name] = metric
    if not grouped:
        return None
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, list(metrics.values()), "")
                                                   for scope, metrics in scopes.items()], "")
                        for resource, scopes in grouped.items()])
