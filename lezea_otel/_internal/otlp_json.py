"""OTLP-JSON lines (the file exporters' format) back into protobuf requests.

Shared by the spool's live retry and ``lezea-otel replay``: both resend lines written earlier,
so both need the same conversion and the same item counts.
"""

from __future__ import annotations

import base64
import json
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
