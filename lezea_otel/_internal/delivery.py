"""Where signals go: the OTLP-JSON-lines files (always), OTLP to a collector (when an endpoint is
configured), the Prometheus ``/metrics`` endpoint (when a port is given), and test exporters.

The providers built here belong to one tracker; the process-global OTel providers are never
touched, so a user's own OpenTelemetry setup and a second tracker never fight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from .export_queue import LogExportQueue, SpanExportQueue
from .otlp_json import LocalFiles
from .settings import Settings, exporter_environment
from .spool import Spool, SpoolingLogExporter, SpoolingMetricExporter, SpoolingSpanExporter

STUCK_EXPORT_S = 1.0  # at finalize, an export on the wire longer than this is spooled instead of awaited


@dataclass
class Providers:
    tracer: TracerProvider
    meter: MeterProvider
    logger: LoggerProvider
    prometheus_server: Any = None
    prometheus_port: int | None = None
    targets: list[str] = field(default_factory=list)
    spool: Spool | None = None
    readers: list[MetricReader] = field(default_factory=list)
    scrapes: ScrapeClock | None = None
    files: LocalFiles | None = None  # what reached the local otlp/ files (produced == written + dropped)

    def shutdown(self, timeout_s: float) -> bool:
        """Flush and stop everything within ``timeout_s``; False when something was still hanging.

        The three providers stop side by side: a collector that does not answer holds up only its
        own exporter, never the local files (each provider flushes its file exporter first).
        """
        deadline = time.monotonic() + timeout_s
        if self.scrapes is not None:
            self.scrapes.wait_for_next(timeout_s / 2)  # Prometheus sees the final status, not a vanished run
        if self.spool is not None:
            self.spool.stop(min(1.0, timeout_s / 4))  # what is still spooled waits for replay
        timeout_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        steps = (self.tracer.shutdown, self.logger.shutdown, lambda: self.meter.shutdown(timeout_millis=timeout_ms))
        workers = [threading.Thread(target=_quietly, args=(step,), name="lezea-otel-shutdown", daemon=True)
                   for step in steps]
        for worker in workers:
            worker.start()
        while time.monotonic() < deadline:
            alive = [worker for worker in workers if worker.is_alive()]
            if not alive:
                break
            alive[0].join(0.05)
            if self.spool is not None:  # a collector that does not answer costs a second, not the bound
                self.spool.abandon_stuck(min(STUCK_EXPORT_S, timeout_s / 4))
        hanging = any(worker.is_alive() for worker in workers)
        if hanging and self.spool is not None:
            self.spool.settle()
        if self.prometheus_server is not None:
            self.prometheus_server.shutdown()
            self.prometheus_server.server_close()
            self.prometheus_server = None
        return not hanging

    def abandon_in_child(self) -> None:
        """In a forked child: the SDK restarts each periodic metric reader there, which would export
        the parent's metrics again under the parent's identity; stop them before they tick."""
        for reader in self.readers:
            stop = getattr(reader, "_shutdown_event", None)  # the SDK's own stop signal; no public one
            if stop is not None:
                stop.set()

    def announce(self) -> None:
        """Export what is pending now (in the background), so a run is visible seconds after it starts."""
        def flush() -> None:
            self.tracer.force_flush(2000)
            self.logger.force_flush(2000)

        threading.Thread(target=flush, name="lezea-otel-announce", daemon=True).start()


def _quietly(step: Callable[[], Any]) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001 - an exporter failing at exit must not stop the others
        pass


_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)


class _FirstOnly(logging.Filter):
    """Lets the first record of each exporter logger through; a dead collector is one line, not a flood."""

    def __init__(self) -> None:
        super().__init__()
        self.suppressed = 0
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in self._seen:
            self.suppressed += 1
            return False
        self._seen.add(record.name)
        record.msg = f"{record.msg} (lezea_otel: further messages of this exporter are suppressed)"
        return True


_exporter_log_filter = _FirstOnly()


def _quiet_exporter_logs() -> None:
    for name in _EXPORTER_LOGGERS:
        exporter_logger = logging.getLogger(name)
        if _exporter_log_filter not in exporter_logger.filters:
            exporter_logger.addFilter(_exporter_log_filter)


def _otlp_exporters(settings: Settings) -> dict[str, Any]:
    """OTLP exporters per signal. Endpoints from OTEL_* variables are left to the exporters, which
    apply the specification's rules (per-signal paths for HTTP, headers, TLS, timeouts)."""
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        def endpoint(_signal: str) -> dict[str, str]:
            return {"endpoint": settings.endpoint} if settings.endpoint else {}
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )

        def endpoint(signal: str) -> dict[str, str]:
            if not settings.endpoint:
                return {}
            return {"endpoint": settings.endpoint.rstrip("/") + f"/v1/{signal}"}

    classes = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}
    _quiet_exporter_logs()
    return {signal: classes[signal](**endpoint(signal), **settings.otlp_options.get(signal, {}))
            for signal in settings.otlp_signals}


def build_providers(
    settings: Settings,
    resource: Resource,
    otlp_dir: Path,
    spool_dir: Path,
    extra_exporters: Sequence[Any],
    prometheus_port: int | None,
    warn: Callable[[str, str, str], None],
) -> Providers:
    spool: Spool | None = None
    files: LocalFiles | None = None
    span_processors: list[Any] = []
    log_processors: list[Any] = []
    readers: list[MetricReader] = []
    targets: list[str] = []
    interval = settings.metric_export_interval_ms
    if not settings.sdk_disabled:
        otlp_dir.mkdir(parents=True, exist_ok=True)
        files = LocalFiles(otlp_dir, warn)  # the export queue, not the SDK's batch processor: never drops
        span_processors.append(SpanExportQueue(files.span_writer(), settings.export_queue("traces")))
        log_processors.append(LogExportQueue(files.log_writer(), settings.export_queue("logs")))
        readers.append(PeriodicExportingMetricReader(files.metric_exporter(),
                                                     export_interval_millis=interval))
        targets.append(f"files {otlp_dir}")
        try:
            with exporter_environment(settings):  # they read OTEL_EXPORTER_OTLP_*: never an unusable one
                exporters = _otlp_exporters(settings)
        except Exception as error:  # noqa: BLE001 - a bad certificate path, a missing extra
            warn("start", "OTLP exporters could not be created", f"{type(error).__name__}: {error}; local only")
            exporters = {}
        spool = Spool(spool_dir) if exporters else None
        if "traces" in exporters:
            span_processors.append(SpanExportQueue(SpoolingSpanExporter(exporters["traces"], spool),
                                                   settings.export_queue("traces")))
        if "logs" in exporters:
            log_processors.append(LogExportQueue(SpoolingLogExporter(exporters["logs"], spool),
                                                 settings.export_queue("logs")))
        if "metrics" in exporters:
            readers.append(PeriodicExportingMetricReader(SpoolingMetricExporter(exporters["metrics"], spool),
                                                         export_interval_millis=interval))
        if exporters:
            targets.append(f"OTLP {settings.protocol} {settings.endpoint or '(OTEL_EXPORTER_OTLP_* variables)'}"
                           f" [{', '.join(sorted(exporters))}]")
    for exporter in extra_exporters:
        if isinstance(exporter, SpanExporter):
            span_processors.append(SimpleSpanProcessor(exporter))
        elif isinstance(exporter, LogRecordExporter):
            log_processors.append(SimpleLogRecordProcessor(exporter))
        elif isinstance(exporter, MetricReader):
            readers.append(exporter)
    server = scrapes = None
    if prometheus_port and not settings.sdk_disabled:
        server, prometheus_reader, scrapes = _prometheus(prometheus_port, settings.prometheus_addr, warn)
        if prometheus_reader is not None:
            readers.append(prometheus_reader)
            targets.append(f"/metrics on {settings.prometheus_addr}:{prometheus_port}")
    tracer = TracerProvider(resource=resource, shutdown_on_exit=False)
    for processor in span_processors:
        tracer.add_span_processor(processor)
    logger = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for processor in log_processors:
        logger.add_log_record_processor(processor)
    meter = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    return Providers(tracer, meter, logger, server, prometheus_port if server else None, targets, spool, readers,
                     scrapes, files)


def _prometheus(port: int, addr: str, warn: Callable[[str, str, str], None]) -> tuple[Any, Any, Any]:
    """The official Prometheus reader on a registry of its own, served on ``addr:port``."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=True)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as error:
        warn("start", f"the Prometheus port {port} cannot be served",
             f"{error}; the run goes on without /metrics (pass prometheus_port=None to silence this)")
        return None, None, None
    scrapes = ScrapeClock()
    registry.register(scrapes)
    return server, PrometheusMetricReader(registry=registry), scrapes


class ScrapeClock:
    """A collector that yields nothing and notes when Prometheus scrapes. A pulled run that ends
    between two scrapes would look like one that died; finalize waits (bounded) for one more."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=2)
        self._scraped = threading.Condition()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        with self._scraped:
            self._times.append(time.monotonic())
            self._scraped.notify_all()
        return []

    def wait_for_next(self, limit_s: float) -> bool:
        """True when a scrape came. No wait when nothing scrapes this endpoint regularly, or when the
        next scrape is not due within ``limit_s`` (a 60 s scrape interval must not hold finalize)."""
        times = self._times
        if len(times) < 2:
            return False
        interval = times[-1] - times[-2]
        since = time.monotonic()
        due_in = times[-1] + interval - since
        if due_in > limit_s:
            return False
        with self._scraped:
            wait_s = min(limit_s, max(due_in, 0.0) + interval / 2)
            return self._scraped.wait_for(lambda: times[-1] > since, wait_s)
