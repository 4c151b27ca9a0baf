"""A real OTLP receiver for tests: gRPC and HTTP servers built from the opentelemetry-proto
service definitions, recording every request they get."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

REQUESTS = {
    "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (metrics_service_pb2.ExportMetricsServiceRequest,
                metrics_service_pb2.ExportMetricsServiceResponse),
    "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


@dataclass
class Received:
    requests: dict[str, list[Any]] = field(default_factory=lambda: {"traces": [], "metrics": [], "logs": []})
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, signal: str, request: Any, headers: dict[str, str]) -> None:
        with self.lock:
            self.requests[signal].append(request)
            self.headers.append(headers)

    def spans(self) -> list[Any]:
        return [span for request in self.requests["traces"] for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def resources(self, signal: str) -> list[dict[str, Any]]:
        key = {"traces": "resource_spans", "metrics": "resource_metrics", "logs": "resource_logs"}[signal]
        return [{a.key: _value(a.value) for a in r.resource.attributes}
                for request in self.requests[signal] for r in getattr(request, key)]

    def metric_points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        points = []
        for request in self.requests["metrics"]:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name != name:
                            continue
                        data = getattr(metric, metric.WhichOneof("data"))
                        for point in data.data_points:
                            value = point.as_double if hasattr(point, "as_double") else point.sum
                            points.append(({a.key: _value(a.value) for a in point.attributes}, value))
        return points

    def log_records(self) -> list[Any]:
        return [record for request in self.requests["logs"] for rl in request.resource_logs
                for sl in rl.scope_logs for record in sl.log_records]


def _has_span(request: Any, name: str) -> bool:
    return any(span.name == name
               for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans)


def _response(signal: str, rejected: int) -> Any:
    """OTLP's partial success: the request was taken, ``rejected`` of its items were not."""
    response = REQUESTS[signal][1]()
    if rejected:
        field_name = {"traces": "rejected_spans", "metrics": "rejected_data_points",
                      "logs": "rejected_log_records"}
        setattr(response.partial_success, field_name[signal], rejected)
        response.partial_success.error_message = "rejected by the test"
    return response


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class HttpReceiver:
    """OTLP/HTTP (protobuf) on 127.0.0.1:<free port>, paths /v1/traces, /v1/metrics, /v1/logs."""

    def __init__(self, port: int = 0, received: Received | None = None, keep_alive: bool = False) -> None:
        """``keep_alive``: HTTP/1.1, connections kept open between requests, as a collector does."""
        self.received = received or Received()
        self.refuse_with: int | None = None  # e.g. 503, 429, 400: answer every export with that status
        self.delay_s = 0.0  # a slow collector: answer only after this long
        self.partial_reject = 0  # answer with a partial success rejecting this many items
        self.poison: str | None = None  # refuse for good (HTTP 400) any request with a span of this name
        received = self.received
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                signal = self.path.rsplit("/", 1)[-1]
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay_s)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if signal not in REQUESTS:
                    self.send_response(404)
                    self.end_headers()
                    return
                request = REQUESTS[signal][0].FromString(body)
                refusal = receiver.refuse_with
                if (refusal is None and receiver.poison and signal == "traces"
                        and _has_span(request, receiver.poison)):
                    refusal = 400
                if refusal is not None:
                    self.send_response(refusal)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                received.add(signal, request, dict(self.headers))
                payload = _response(signal, receiver.partial_reject).SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        if keep_alive:
            Handler.protocol_version = "HTTP/1.1"

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GrpcReceiver:
    """OTLP/gRPC on 127.0.0.1:<free port>, the three collector services."""

    def __init__(self, port: int = 0, received: Received | None = None, keep_alive: bool = False) -> None:
        """``keep_alive``: HTTP/1.1, connections kept open between requests, as a collector does."""
        self.received = received or Received()
        self.refuse_with: grpc.StatusCode | None = None  # e.g. UNAVAILABLE, RESOURCE_EXHAUSTED
        self.delay_s = 0.0
        self.partial_reject = 0
        # refuse for good (INVALID_ARGUMENT) a request with a span of this name
        self.poison: str | None = None
        received = self.received
        receiver = self

        def servicer(base: type, signal: str) -> Any:
            class Servicer(base):  # type: ignore[misc, valid-type]
                def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC naming
                    time.sleep(receiver.delay_s)
                    if receiver.refuse_with is not None:
                        context.abort(receiver.refuse_with, "refused by the test")
                    if receiver.poison and signal == "traces" and _has_span(request, receiver.poison):
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "poisoned by the test")
                    received.add(signal, request, dict(context.invocation_metadata()))
                    return _response(signal, receiver.partial_reject)

            return Servicer()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            servicer(trace_service_pb2_grpc.TraceServiceServicer, "traces"), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            servicer(metrics_service_pb2_grpc.MetricsServiceServicer, "metrics"), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
            servicer(logs_service_pb2_grpc.LogsServiceServicer, "logs"), self._server)
        self.port = port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self.endpoint = f"http://127.0.0.1:{port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)
