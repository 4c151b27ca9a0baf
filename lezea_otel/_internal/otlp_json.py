"""OTLP-JSON lines (the file exporters' format): the run's local files, and lines back into requests.

The local ``otlp/`` files are written without dropping (see :class:`LocalFiles`). Reading lines
back is shared by the spool's live retry and ``lezea-otel replay``: both resend lines written
earlier, so both need the same conversion and the same item counts.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

SIGNAL_FILES = {"traces": "spans.jsonl", "metrics": "metrics.jsonl", "logs": "logs.jsonl"}
REJECTED_FOLDER = "rejected"  # spool/rejected/: batches the collector refused for good
REQUEST_TYPES = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
GRPC_STUBS = {
    "traces": trace_service_pb2_grpc.TraceServiceStub,
    "metrics": metrics_service_pb2_grpc.MetricsServiceStub,
    "logs": logs_service_pb2_grpc.LogsServiceStub,
}
_IDS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_base64(value: Any) -> Any:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64 for bytes."""
    if isinstance(value, dict):
        return {k: base64.b64encode(bytes.fromhex(v)).decode() if k in _IDS and isinstance(v, str)
                else _hex_ids_to_base64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids_to_base64(v) for v in value]
    return value


def to_request(signal: str, line: bytes) -> Any:
    """Raises ValueError (or protobuf's ParseError, a ValueError) for a corrupt line."""
    from google.protobuf import json_format

    return json_format.ParseDict(_hex_ids_to_base64(json.loads(line)), REQUEST_TYPES[signal]())


def item_count(signal: str, request: Any) -> int:
    """Spans or log records in a request; a metrics request counts as one batch, as the SDK exports it."""
    if signal == "traces":
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    return 1


@dataclass
class FileCounts:
    """Items (spans, log records, metric batches) that reached a local file, or could not."""

    produced: int = 0
    written: int = 0
    dropped: int = 0


class LocalFiles:
    """The run's ``otlp/`` files and what reached them: ``produced == written + dropped`` per signal.

    The SDK's batch processors drop what does not fit their queue (thousands of spans of a fast
    async run) and only log it. Here spans and log records go through the project's export
    queue, whose caller writes a batch itself when the queue is full, so only a failing disk can
    drop anything; that is counted here and warned about once.
    """

    def __init__(self, folder: Path, warn: Callable[[str, str, str], None]) -> None:
        self.folder = folder
        self.counts = {signal: FileCounts() for signal in SIGNAL_FILES}
        self._lock = threading.Lock()
        self._warn = warn
        self._warned = False

    def count(self, signal: str, items: int, written: bool) -> None:
        """From the export threads and from a caller writing the overflow: one lock keeps sums exact."""
        with self._lock:
            counts = self.counts[signal]
            counts.produced += items
            if written:
                counts.written += items
                return
            counts.dropped += items
            first, self._warned = not self._warned, True
        if first:
            self._warn("export", f"the local OTLP-JSON file {SIGNAL_FILES[signal]} could not be written",
                       f"{items} {signal} items lost there and counted in summary['delivery']; "
                       f"the audit {self.folder.parent / 'events.jsonl'} keeps the records")

    def report(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {signal: asdict(counts) for signal, counts in self.counts.items()}

    def span_writer(self) -> FileWriter:
        from opentelemetry.exporter.otlp.json.file import FileSpanExporter

        return FileWriter(self, "traces", FileSpanExporter(self.folder / SIGNAL_FILES["traces"]))

    def log_writer(self) -> FileWriter:
        from opentelemetry.exporter.otlp.json.file._log_exporter import FileLogExporter

        return FileWriter(self, "logs", FileLogExporter(self.folder / SIGNAL_FILES["logs"]))

    def metric_exporter(self) -> Any:
        return _counting_metric_file(self)


class FileWriter:
    """The exporter behind an export queue (export_queue.py) for one local file. When the queue is
    full the caller writes a batch itself (``keep_batch``): training waits for a file write, nothing
    is dropped."""

    def __init__(self, files: LocalFiles, signal: str, inner: Any) -> None:
        self._files, self._signal, self._inner = files, signal, inner

    def register_queue(self, queue: Any) -> None:
        """The queue announces itself; a file has nothing to settle at finalize, so nothing is kept."""

    def export(self, batch: Any) -> bool:
        try:
            written = self._inner.export(batch).name == "SUCCESS"
        except Exception:  # noqa: BLE001 - a failing write is counted, never raised into training
            written = False
        self._files.count(self._signal, len(batch), written)
        return written

    keep_batch = export

    def shutdown(self) -> None:
        self._inner.shutdown()


def _counting_metric_file(files: LocalFiles) -> Any:
    """The metrics file exporter, counting each exported batch (the periodic reader never queues)."""
    from opentelemetry.exporter.otlp.json.file import FileMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class CountingFileMetricExporter(MetricExporter):
        def __init__(self) -> None:
            self._inner = inner = FileMetricExporter(files.folder / SIGNAL_FILES["metrics"])
            super().__init__(preferred_temporality=inner._preferred_temporality,  # noqa: SLF001
                             preferred_aggregation=inner._preferred_aggregation)  # noqa: SLF001

        def export(self, metrics_data: Any, timeout_millis: float = 10_000,
                   **kwargs: Any) -> MetricExportResult:
            try:
                result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            except Exception:  # noqa: BLE001
                result = MetricExportResult.FAILURE
            files.count("metrics", 1, result == MetricExportResult.SUCCESS)
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return self._inner.force_flush(timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    return CountingFileMetricExporter()
