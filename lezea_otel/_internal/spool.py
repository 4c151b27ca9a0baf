"""Nothing is silently lost: OTLP batches the collector did not take are spooled to disk.

Each OTLP exporter is wrapped: a batch it delivers is counted as exported; a batch it could not
deliver (down, refusing, timing out) is written to ``runs/<id>/spool/<signal>.jsonl`` in the
OTLP-JSON-lines format and counted as spooled, ready for ``lezea-otel replay``. The counts make
the run's delivery report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.exporter.otlp.json.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.json.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

SPOOL_FILES = {"traces": "spans.jsonl", "metrics": "metrics.jsonl", "logs": "logs.jsonl"}


@dataclass
class SignalCounts:
    """Items (spans, metric batches, log records) per delivery outcome."""

    produced: int = 0
    exported: int = 0
    spooled: int = 0
    dropped: int = 0


class Spool:
    """One per run: the spool folder and the per-signal counts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts = {signal: SignalCounts() for signal in SPOOL_FILES}
        self._lock = threading.Lock()

    def write(self, signal: str, encoded: dict[str, Any] | None) -> bool:
        if encoded is None:
            return True
        line = orjson.dumps(encoded, option=orjson.OPT_APPEND_NEWLINE)
        try:
            with self._lock:
                self.folder.mkdir(parents=True, exist_ok=True)
                with open(self.folder / SPOOL_FILES[signal], "ab") as handle:
                    handle.write(line)
        except OSError:
            return False
        return True

    def report(self) -> dict[str, dict[str, int]]:
        return {signal: asdict(counts) for signal, counts in self.counts.items()}


class _Spooling:
    """Shared logic: try the real exporter, spool on failure, count either way."""

    def _setup(self, inner: Any, spool: Spool, signal: str, encode: Callable[[Any], Any],
               size: Callable[[Any], int]) -> None:
        self._inner, self._spool, self._signal, self._encode, self._size = inner, spool, signal, encode, size

    def _deliver(self, batch: Any, success: Any, **kwargs: Any) -> bool:
        counts = self._spool.counts[self._signal]
        items = self._size(batch)
        counts.produced += items
        try:
            delivered = self._inner.export(batch, **kwargs) == success
        except Exception:  # noqa: BLE001 - an exporter raising is one more way of not delivering
            delivered = False
        if delivered:
            counts.exported += items
            return True
        try:
            encoded = self._encode(batch).to_dict()
        except Exception:  # noqa: BLE001
            encoded = None
        if encoded is not None and self._spool.write(self._signal, encoded):
            counts.spooled += items
            return True
        counts.dropped += items
        return False


class SpoolingSpanExporter(_Spooling, SpanExporter):
    def __init__(self, inner: SpanExporter, spool: Spool) -> None:
        self._setup(inner, spool, "traces", encode_spans, len)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        ok = self._deliver(spans, SpanExportResult.SUCCESS)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class SpoolingLogExporter(_Spooling, LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, spool: Spool) -> None:
        self._setup(inner, spool, "logs", encode_logs, len)

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        ok = self._deliver(batch, LogRecordExportResult.SUCCESS)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class SpoolingMetricExporter(_Spooling, MetricExporter):
    def __init__(self, inner: MetricExporter, spool: Spool) -> None:
        MetricExporter.__init__(self, preferred_temporality=inner._preferred_temporality,  # noqa: SLF001
                                preferred_aggregation=inner._preferred_aggregation)  # noqa: SLF001
        self._setup(inner, spool, "metrics", encode_metrics, lambda _batch: 1)

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        ok = self._deliver(metrics_data, MetricExportResult.SUCCESS, timeout_millis=timeout_millis, **kwargs)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)
