"""Where a follower delivers: exporters that receive the same data, whether a refusal is retried, and
the counts per signal that make the run's delivery report.

A destination sends what it is handed to each of its exporters, every exporter trying whatever the
first did; an exporter that raises (the gRPC exporter on an encoding error) has refused. One that
does not retry (the local files, test exporters) counts what it could not take as dropped (and says
so once, through ``on_drop``); one that retries (a collector) leaves the holding to the follower.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from lezea_otel import semconv as names
from lezea_otel.exporter.logs import LogRecordExporter, ReadableLogRecord, succeeded
from lezea_otel.util.safety import raise_internal


@dataclass
class SignalCounts:
    """Items of one signal: converted from the audit, taken by the destination, refused (counted)."""

    produced: int = 0
    exported: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    """Refused by a destination that does not retry; the audit still holds their records."""
    rejected: int = 0
    """Refused for good by a collector that takes other data: skipped; the audit still holds them."""


@dataclass
class Destination:
    """Exporters that receive the same data, and whether a refusal is retried.

    ``on_metrics`` also gets each interval's metrics (the Prometheus endpoint's latest values).
    ``key`` names its cursor files (default: ``name``): the same collector gets the same key in the live
    exporter and in ``lezea-otel export``, which so resumes where the live one stopped.
    """

    name: str
    spans: Sequence[SpanExporter] = ()
    logs: Sequence[LogRecordExporter] = ()
    metrics: Sequence[MetricExporter] = ()
    retry: bool = False
    on_metrics: Callable[[MetricsData], None] | None = None
    key: str = ""
    on_drop: Callable[[str, int], None] | None = None
    """Told once per signal, at its first drop (``signal``, items): a local file that cannot be written."""
    on_request: Callable[[str, str, float], None] | None = None
    """Told of every export request (destination name, signal, seconds it took, taken or not)."""
    counts: dict[str, SignalCounts] = field(default_factory=lambda: {
        signal: SignalCounts() for signal in names.EXPORT_SIGNALS})
    last_taken: float = field(default_factory=time.monotonic)
    """When it last took something (``time.monotonic``): how long a collector has been taking nothing."""
    _shut: bool = field(default=False, repr=False)
    _told: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    def send_spans(self, spans: list[ReadableSpan]) -> bool:
        return self._send("traces", spans, [functools.partial(_span_export, e, spans) for e in self.spans])

    def send_logs(self, logs: list[ReadableLogRecord]) -> bool:
        return self._send("logs", logs, [functools.partial(_log_export, e, logs) for e in self.logs])

    def send_metrics(self, data: MetricsData) -> bool:
        if self.on_metrics is not None:
            on_metrics = self.on_metrics
            self._attempt(lambda: on_metrics(data) is None)
        if not self.metrics:
            return True
        return self._send("metrics", [data],
                          [functools.partial(_metric_export, e, data) for e in self.metrics])

    def takes(self, signal: str) -> bool:
        """Whether it gets ``signal`` at all (a collector may have logs off: ``OTEL_LOGS_EXPORTER=none``)."""
        if signal == "metrics":
            return bool(self.metrics) or self.on_metrics is not None
        return bool(self.spans if signal == "traces" else self.logs)

    def answers(self, signal: str) -> bool:
        """Whether every exporter of ``signal`` gets an empty request taken: the collector is up (and, if
        it refused a batch just now, refused that batch's content). Spans and logs only."""
        if signal == "traces":
            return bool(self.spans) and all(self._attempt(functools.partial(_span_export, e, []))
                                            for e in self.spans)
        return bool(self.logs) and all(self._attempt(functools.partial(_log_export, e, []))
                                       for e in self.logs)

    def shutdown(self) -> None:
        """Once (a second call is a no-op); from another thread too: an exporter waiting to retry stops."""
        if self._shut:
            return
        self._shut = True
        exporters: list[Any] = [*self.spans, *self.logs, *self.metrics]
        for exporter in exporters:
            self._attempt(lambda: exporter.shutdown() is None)  # noqa: B023 - called at once

    def _send(self, signal: str, items: Sequence[Any], exports: list[Callable[[], bool]]) -> bool:
        counts = self.counts[signal]
        began = time.perf_counter()
        ok = all([self._attempt(export) for export in exports])  # noqa: C419 - each tries, whatever the first did
        if self.on_request is not None:
            self.on_request(self.name, signal, time.perf_counter() - began)
        if ok:
            counts.exported += len(items)
            self.last_taken = time.monotonic()
        else:
            counts.failed_attempts += 1
            if not self.retry:
                counts.dropped += len(items)
                if self.on_drop is not None and signal not in self._told:
                    self._told.add(signal)
                    self.on_drop(signal, len(items))
        return ok or not self.retry

    @staticmethod
    def _attempt(export: Callable[[], bool]) -> bool:
        try:
            return export()
        except Exception:  # the gRPC exporter raises on an encoding error: a refusal
            if raise_internal():
                raise
            return False


def _span_export(exporter: SpanExporter, spans: list[ReadableSpan]) -> bool:
    return exporter.export(spans) == SpanExportResult.SUCCESS


def _log_export(exporter: LogRecordExporter, logs: list[ReadableLogRecord]) -> bool:
    return succeeded(exporter.export(logs))


def _metric_export(exporter: MetricExporter, data: MetricsData) -> bool:
    return exporter.export(data) == MetricExportResult.SUCCESS
