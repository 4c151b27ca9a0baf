"""The OTLP sender (lezea_otel/exporter/otlp.py) against real receivers, over gRPC and HTTP.

Everything is configured the way a user does it, through ``OTEL_EXPORTER_OTLP_*`` variables, and
resolved by ``resolve_settings``; the data are the hand-built ReadableSpan / ReadableLogRecord /
MetricsData the exporter sends. TLS uses a self-signed certificate made here with the openssl CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from concurrent import futures
from functools import partial
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import requests
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags

from lezea_otel.config.settings import Settings, resolve_settings
from lezea_otel.exporter.otlp import Exporter, Target, describe, exporters, targets

from .otlp_receiver import REQUESTS as _REQUESTS
from .otlp_receiver import GrpcReceiver, HttpReceiver, Received

PROTOCOLS = ("grpc", "http/protobuf")
REQUESTS: dict[str, Any] = dict(_REQUESTS)  # request and response message classes by signal
RESOURCE = Resource({"service.name": "otlp-test"})
SCOPE = InstrumentationScope("lezea_otel.test")


# --- data and sending ----------------------------------------------------------------------------

def _span(name: str = "step", **attributes: Any) -> ReadableSpan:
    context = SpanContext(0x5EED, 0x1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return ReadableSpan(name=name, context=context, resource=RESOURCE, attributes=attributes,
                        start_time=1_000, end_time=2_000, instrumentation_scope=SCOPE)


def _log(body: str = "hello") -> ReadableLogRecord:
    record = LogRecord(timestamp=1_500, body=body, severity_number=SeverityNumber.INFO)
    return ReadableLogRecord(record, resource=RESOURCE, instrumentation_scope=SCOPE)


def _metrics(value: float = 0.25) -> MetricsData:
    point = NumberDataPoint({"split": "train"}, 1_000, 2_000, value)
    metric = Metric("train.loss", "", "1", Gauge([point]))
    return MetricsData([ResourceMetrics(RESOURCE, [ScopeMetrics(SCOPE, [metric], "")], "")])


_SEND: dict[str, Any] = {"traces": lambda e: e.export([_span()]), "logs": lambda e: e.export([_log()]),
         "metrics": lambda e: e.export(_metrics())}


def _send(built: Mapping[str, Exporter], only: str | None = None) -> dict[str, str]:
    """Export one item per signal (or only ``only``), in the order logs, metrics, traces, and shut the
    exporters down: the result's name by signal."""
    try:
        return {signal: _SEND[signal](built[signal]).name
                for signal in sorted(built) if only in (None, signal)}
    finally:
        _close(built)


def _close(built: Mapping[str, Exporter]) -> None:
    for exporter in built.values():
        exporter.shutdown()


def _resolved(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str],
              arguments: Mapping[str, Any] | None = None) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = resolve_settings(arguments or {})
    assert settings.problems == ()
    return settings


def _built(monkeypatch: pytest.MonkeyPatch,
           env: Mapping[str, str]) -> tuple[dict[str, Target], dict[str, Exporter]]:
    resolved = targets(_resolved(monkeypatch, env))
    return resolved, exporters(resolved)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


# --- receivers -----------------------------------------------------------------------------------

@pytest.fixture
def receiver() -> Iterator[Any]:
    """``receiver(protocol)``: a plaintext receiver from tests/otlp_receiver.py, stopped after the test."""
    made: list[Any] = []

    def make(protocol: str) -> Any:
        made.append(GrpcReceiver() if protocol == "grpc" else HttpReceiver())
        return made[-1]

    yield make
    for one in made:
        one.stop()


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused TLS handshake is what some tests want


class PathReceiver:
    """OTLP/HTTP like otlp_receiver.HttpReceiver, plus TLS (``context``), deflate and the request paths."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.received = Received()
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                decode: Any = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(
                    self.headers.get("Content-Encoding", ""), bytes)
                signal = self.path.rsplit("/", 1)[-1]
                outer.paths.append(self.path)
                outer.received.add(signal, REQUESTS[signal][0].FromString(decode(body)),
                                   _lower(dict(self.headers)))
                payload = REQUESTS[signal][1]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        if context is not None:  # the handshake happens in the handler's thread, not in accept()
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
        scheme = "https" if context is not None else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_SERVICES = {"traces": "opentelemetry.proto.collector.trace.v1.TraceService",
             "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
             "logs": "opentelemetry.proto.collector.logs.v1.LogsService"}


class TlsGrpcReceiver:
    """OTLP/gRPC over TLS (optionally requiring a client certificate signed by ``cert``)."""

    def __init__(self, cert: bytes, key: bytes, require_client: bool = False) -> None:
        self.received = Received()

        def export(signal: str, request: Any, context: Any) -> Any:
            self.received.add(signal, request, dict(context.invocation_metadata()))
            return REQUESTS[signal][1]()

        handlers = [grpc.method_handlers_generic_handler(service, {
            "Export": grpc.unary_unary_rpc_method_handler(
                partial(export, signal), request_deserializer=REQUESTS[signal][0].FromString,
                response_serializer=REQUESTS[signal][1].SerializeToString)})
            for signal, service in _SERVICES.items()]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=handlers)
        credentials = grpc.ssl_server_credentials([(key, cert)],
                                                  root_certificates=cert if require_client else None,
                                                  require_client_auth=require_client)
        self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self.endpoint = f"https://127.0.0.1:{self.port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)


@dataclasses.dataclass(frozen=True)
class Pki:
    cert: Path
    key: Path

    def context(self, require_client: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        if require_client:  # the self-signed certificate is its own CA: the client presents it too
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.cert)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A self-signed certificate for 127.0.0.1 and localhost (EC: made in milliseconds)."""
    assert shutil.which("openssl"), "the openssl CLI makes the test certificate (scripts/test.sh installs it)"
    folder = tmp_path_factory.mktemp("pki")
    made = Pki(folder / "cert.pem", folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(made.key), "-out", str(made.cert), "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return made


@pytest.fixture
def tls_receiver(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``tls_receiver(protocol, require_client=False)``, stopped after the test.

    ``REQUESTS_CA_BUNDLE`` is set as on many machines and CI images: requests prefers it to the CA
    file the HTTP exporter is given, unless the sender sees to it."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.utils.DEFAULT_CA_BUNDLE_PATH)
    made: list[Any] = []

    def make(protocol: str, require_client: bool = False) -> Any:
        made.append(TlsGrpcReceiver(pki.cert.read_bytes(), pki.key.read_bytes(), require_client)
                    if protocol == "grpc" else PathReceiver(pki.context(require_client)))
        return made[-1]

    yield make
    for one in made:
        one.stop()


class Relay:
    """Forwards TCP to ``port`` and counts the bytes sent towards it: what went over the wire."""

    def __init__(self, port: int) -> None:
        self.sent = 0
        self._lock = threading.Lock()
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for source, sink, counted in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(source, sink, counted), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with self._lock:
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


# --- what arrives --------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_span_a_log_record_and_metrics_arrive(monkeypatch: pytest.MonkeyPatch, receiver: Any,
                                                protocol: str) -> None:
    collector = receiver(protocol)
    resolved, built = _built(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                                           "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    assert _send(built) == {"logs": "SUCCESS", "metrics": "SUCCESS", "traces": "SUCCESS"}
    assert [span.name for span in collector.received.spans()] == ["step"]
    assert [record.body.string_value for record in collector.received.log_records()] == ["hello"]
    assert collector.received.metric_points("train.loss") == [({"split": "train"}, 0.25)]
    assert collector.received.resources("traces") == [{"service.name": "otlp-test"}]
    assert describe(resolved) == f"OTLP {protocol} {collector.endpoint} [logs, metrics, traces]"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generic_and_per_signal_headers_arrive(monkeypatch: pytest.MonkeyPatch, receiver: Any,
                                               protocol: str) -> None:
    collector = receiver(protocol)
    resolved, built = _built(monkeypatch, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_HEADERS": "team=ml,api-key=s%20ecret",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "tenant=7"})
    assert "ecret" not in repr(resolved) and "ecret" not in describe(resolved)  # credentials never shown
    _send(built)
    logs, metrics, traces = (_lower(collector.received.headers[i]) for i in range(3))  # sent in this order
    assert (traces["team"], traces["api-key"], metrics["team"]) == ("ml", "s ecret", "ml")
    assert logs["tenant"] == "7" and "team" not in logs  # the per-signal variable replaces the generic one


# --- timeouts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_timeout_of_500_is_milliseconds(monkeypatch: pytest.MonkeyPatch, receiver: Any,
                                          protocol: str) -> None:
    collector = receiver(protocol)
    collector.delay_s = 1.5  # answers after 1.5 s: in time for "500 seconds", too late for 500 ms
    resolved, built = _built(monkeypatch, {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": _traces_url(collector, protocol),
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_TIMEOUT": "500"})
    assert resolved["traces"].timeout_s == 0.5
    started = time.monotonic()
    assert _send(built) == {"traces": "FAILURE"}
    assert time.monotonic() - started < 1.2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_closed_port_fails_within_the_timeout(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    port = _closed_port()
    _, built = _built(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                                    "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                                    "OTEL_EXPORTER_OTLP_TIMEOUT": "300"})
    started = time.monotonic()
    assert _send(built, only="logs") == {"logs": "FAILURE"}
    assert time.monotonic() - started < 1.0  # the exporters' default would be 10 s


def _traces_url(collector: Any, protocol: str) -> str:
    return str(collector.endpoint) + ("" if protocol == "grpc" else "/v1/traces")


# --- compression ---------------------------------------------------------------------------------

def test_gzip_over_http_arrives_compressed(monkeypatch: pytest.MonkeyPatch, receiver: Any) -> None:
    collector = receiver("http/protobuf")
    _, built = _built(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                                    "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
    assert _send(built, only="traces") == {"traces": "SUCCESS"}
    assert _lower(collector.received.headers[0])["content-encoding"] == "gzip"
    assert [span.name for span in collector.received.spans()] == ["step"]


def test_deflate_over_http_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = PathReceiver()
    try:
        _, built = _built(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                                        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "deflate"})
        assert _send(built) == {"logs": "SUCCESS", "metrics": "SUCCESS", "traces": "SUCCESS"}
    finally:
        collector.stop()
    encodings = {signal: headers.get("content-encoding") for signal, headers in
                 zip(("logs", "metrics", "traces"), collector.received.headers, strict=True)}
    assert encodings == {"traces": None, "metrics": None, "logs": "deflate"}


@pytest.mark.parametrize(("compression", "at_most", "at_least"),
                         [("gzip", 5_000, 0), ("none", None, 100_000)])
def test_grpc_compression_gzip_shrinks_the_request_and_none_is_accepted(
        monkeypatch: pytest.MonkeyPatch, receiver: Any, compression: str, at_most: int | None,
        at_least: int) -> None:
    """``none`` is a valid value; the gRPC exporter raises on it when it reads the variable itself."""
    collector = receiver("grpc")
    relay = Relay(collector.port)
    try:
        _, built = _built(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{relay.port}",
                                        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                        "OTEL_EXPORTER_OTLP_COMPRESSION": compression})
        try:
            spans: Any = built["traces"]
            assert spans.export([_span(payload="x" * 120_000)]).name == "SUCCESS"
        finally:
            _close(built)
    finally:
        relay.close()
    assert [span.name for span in collector.received.spans()] == ["step"]
    assert relay.sent >= at_least and (at_most is None or relay.sent <= at_most)


# --- TLS -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_with_the_certificate_from_the_environment(monkeypatch: pytest.MonkeyPatch, tls_receiver: Any,
                                                       pki: Pki, protocol: str) -> None:
    collector = tls_receiver(protocol)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_TIMEOUT": "500"}
    _, unverified = _built(monkeypatch, env)
    assert _send(unverified, only="traces") == {"traces": "FAILURE"}  # a self-signed certificate is refused
    resolved, built = _built(monkeypatch, {**env, "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.cert)})
    assert resolved["traces"].certificate == pki.cert and resolved["traces"].tls
    assert _send(built) == {"logs": "SUCCESS", "metrics": "SUCCESS", "traces": "SUCCESS"}
    assert [span.name for span in collector.received.spans()] == ["step"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_with_the_client_key_and_certificate(monkeypatch: pytest.MonkeyPatch, tls_receiver: Any,
                                                        pki: Pki, protocol: str) -> None:
    collector = tls_receiver(protocol, require_client=True)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_TIMEOUT": "500", "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.cert)}
    _, anonymous = _built(monkeypatch, env)
    # the collector wants a client certificate
    assert _send(anonymous, only="traces") == {"traces": "FAILURE"}
    _, built = _built(monkeypatch, {**env, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": str(pki.key),
                                    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": str(pki.cert)})
    assert _send(built, only="traces") == {"traces": "SUCCESS"}
    assert [span.name for span in collector.received.spans()] == ["step"]


def _without_scheme(monkeypatch: pytest.MonkeyPatch, host_port: str,
                    env: Mapping[str, str]) -> dict[str, Target]:
    """Targets for a scheme-less gRPC endpoint. Settings' URL check refuses ``host:port`` today, so the
    resolved endpoint is put in by hand; everything else comes from the variables."""
    settings = _resolved(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://placeholder:1",
                                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **env})
    return targets(dataclasses.replace(settings, otel_endpoint=host_port))


def test_grpc_endpoint_without_scheme_means_tls_unless_insecure(monkeypatch: pytest.MonkeyPatch,
                                                                receiver: Any, tls_receiver: Any,
                                                                pki: Pki) -> None:
    secure = tls_receiver("grpc")
    resolved = _without_scheme(monkeypatch, f"127.0.0.1:{secure.port}",
                               {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.cert)})
    assert resolved["traces"].insecure is False
    assert describe(resolved) == f"OTLP grpc 127.0.0.1:{secure.port} (TLS) [logs, metrics, traces]"
    assert _send(exporters(resolved), only="traces") == {"traces": "SUCCESS"}
    assert len(secure.received.spans()) == 1

    plain = receiver("grpc")
    resolved = _without_scheme(monkeypatch, f"127.0.0.1:{plain.port}",
                               {"OTEL_EXPORTER_OTLP_INSECURE": "true"})
    assert _send(exporters(resolved), only="traces") == {"traces": "SUCCESS"}
    assert len(plain.received.spans()) == 1


def test_grpc_scheme_wins_over_insecure(monkeypatch: pytest.MonkeyPatch, receiver: Any, tls_receiver: Any,
                                        pki: Pki) -> None:
    """The specification: ``http://`` is plaintext, ``https://`` is TLS, whatever INSECURE says (the
    Python exporter alone goes TLS for ``http://`` with INSECURE=false)."""
    plain = receiver("grpc")
    _, built = _built(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": plain.endpoint,
                                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                    "OTEL_EXPORTER_OTLP_INSECURE": "false"})
    assert _send(built, only="traces") == {"traces": "SUCCESS"}
    secure = tls_receiver("grpc")
    _, built = _built(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": secure.endpoint,
                                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                    "OTEL_EXPORTER_OTLP_INSECURE": "true",
                                    "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.cert)})
    assert _send(built, only="traces") == {"traces": "SUCCESS"}
    assert len(plain.received.spans()) == len(secure.received.spans()) == 1


# --- endpoints and protocols per signal ----------------------------------------------------------

def test_http_base_endpoint_gets_the_signal_path_a_per_signal_one_is_verbatim(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base, own = PathReceiver(), PathReceiver()
    try:
        resolved, built = _built(monkeypatch, {
            "OTEL_EXPORTER_OTLP_ENDPOINT": base.endpoint + "/",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": own.endpoint + "/custom/traces"})
        assert _send(built) == {"logs": "SUCCESS", "metrics": "SUCCESS", "traces": "SUCCESS"}
    finally:
        base.stop()
        own.stop()
    assert (base.paths, own.paths) == (["/v1/logs", "/v1/metrics"], ["/custom/traces"])
    assert describe(resolved) == (f"OTLP http/protobuf {base.endpoint} [logs, metrics]; "
                                  f"OTLP http/protobuf {own.endpoint}/custom/traces [traces]")


def test_a_per_signal_protocol_wins_over_the_generic_one_not_over_ours(monkeypatch: pytest.MonkeyPatch,
                                                                        receiver: Any) -> None:
    over_grpc, over_http = receiver("grpc"), receiver("http/protobuf")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": over_grpc.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": over_http.endpoint + "/v1/traces"}
    resolved, built = _built(monkeypatch, env)
    assert {signal: target.protocol for signal, target in resolved.items()} == {
        "logs": "grpc", "metrics": "grpc", "traces": "http/protobuf"}
    assert _send(built) == {"logs": "SUCCESS", "metrics": "SUCCESS", "traces": "SUCCESS"}
    assert (len(over_http.received.spans()), len(over_grpc.received.log_records())) == (1, 1)
    assert over_grpc.received.spans() == []
    argument = targets(_resolved(monkeypatch, env, {"protocol": "grpc"}))
    assert argument["traces"].protocol == "grpc"


def test_a_base_endpoint_over_http_for_one_signal_gets_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    resolved = targets(_resolved(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                                               "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                               "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http"}))
    assert {signal: target.endpoint for signal, target in resolved.items()} == {
        "logs": "http://collector:4317", "metrics": "http://collector:4317/v1/metrics",
        "traces": "http://collector:4317"}


# --- values Settings rejected never reach the exporters ------------------------------------------

def test_a_rejected_grpc_timeout_neither_breaks_the_exporter_nor_stays_hidden(monkeypatch: pytest.MonkeyPatch,
                                                                             receiver: Any) -> None:
    collector = receiver("grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "5s")  # the gRPC exporter alone: ValueError
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    settings = resolve_settings({})
    assert any(problem.startswith("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='5s'") for problem in settings.problems)
    assert _send(exporters(targets(settings)), only="traces") == {"traces": "SUCCESS"}
    assert os.environ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] == "5s"  # put back once the exporter is built


def test_rejected_http_headers_are_not_sent(monkeypatch: pytest.MonkeyPatch, receiver: Any) -> None:
    collector = receiver("http/protobuf")
    # invalid: the generic one is used
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "leak=1,broken")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "team=ml")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    settings = resolve_settings({})
    assert len(settings.problems) == 1
    assert _send(exporters(targets(settings)), only="traces") == {"traces": "SUCCESS"}
    sent = _lower(collector.received.headers[0])
    assert sent["team"] == "ml" and "leak" not in sent
    assert os.environ["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] == "leak=1,broken"
