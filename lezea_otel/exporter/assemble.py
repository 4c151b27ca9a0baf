"""One exporter service from the run's settings: the same assembly in a thread, a process, or ``export``.

What ``start()`` used to build in the training process (OTLP exporters, the ``/metrics`` endpoint,
the observers) is built here, beside the trainer, around the run's audit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource

from lezea_otel import semconv as names
from lezea_otel.config.settings import Settings
from lezea_otel.exporter.destination import Destination
from lezea_otel.exporter.records import resource_constants
from lezea_otel.exporter.service import ExporterService
from lezea_otel.util.readable import error_text

Warn = Callable[[str, str, str], None]


def otlp_destination(settings: Settings, warn: Warn) -> tuple[Destination | None, str | None]:
    """The collector, when an endpoint is configured: (destination, its description) or (None, None).

    Exporters that cannot be made (a certificate file that cannot be read, a credential provider that
    is missing or makes the wrong type, a value a constructor refuses) cost one warning: local only.
    """
    if settings.sdk_disabled or not settings.otlp_signals:
        return None, None
    from lezea_otel.exporter import otlp

    resolved = otlp.targets(settings)
    try:
        made = otlp.exporters(resolved)
    except (OSError, RuntimeError, TypeError, ValueError) as error:
        warn("start", "OTLP exporters could not be created", f"{error_text(error)}; local only")
        return None, None
    if not made:
        return None, None
    _quiet_exporter_logs()
    spans: list[Any] = [made["traces"]] if "traces" in made else []
    logs: list[Any] = [made["logs"]] if "logs" in made else []
    metrics: list[Any] = [made["metrics"]] if "metrics" in made else []
    destination = Destination("otlp", spans, logs, metrics, retry=True, key=collector_key(resolved))
    return destination, otlp.describe(resolved)


def collector_key(targets: Mapping[str, Any]) -> str:
    """Names the cursor files of one collector (its endpoint and protocol per signal): the live exporter
    and ``lezea-otel export`` to the same collector share them, so export resumes where the live one
    stopped; another collector, or another choice of signals, is another destination, sent everything."""
    identity = sorted((signal, target.protocol, target.endpoint.rstrip("/"))
                      for signal, target in targets.items())
    return "otlp-" + hashlib.sha256(repr(identity).encode()).hexdigest()[:12]


_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.json.file._internal",  # a full disk: one traceback, not one per batch
    "opentelemetry.exporter.otlp.json.file.trace_exporter",
    "opentelemetry.exporter.otlp.json.file._log_exporter",
    "opentelemetry.exporter.otlp.json.file.metric_exporter",
)


class _FirstOnly(logging.Filter):
    """The first record of each exporter logger per run: a collector that is down for an hour, retried
    with backoff, is one line per signal in the trainer's console (thread mode), not one per attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in self.seen:
            return False
        self.seen.add(record.name)
        record.msg = f"{record.msg} (lezea_otel: further messages of this exporter are suppressed)"
        return True


_first_only = _FirstOnly()


def _quiet_exporter_logs() -> None:
    _first_only.seen.clear()  # a new run: its first problem is shown again
    for name in _EXPORTER_LOGGERS:
        exporter_logger = logging.getLogger(name)
        if _first_only not in exporter_logger.filters:
            exporter_logger.addFilter(_first_only)


def observers_factory(settings: Settings, trainer_pid: int, warn: Warn,
                      info: Callable[[str], None]) -> Callable[[Resource], Any] | None:
    """Observers of the trainer's process tree and the heartbeat, made once the trainer's resource is read."""
    try:
        from lezea_otel.exporter.observe import ObservedMetrics
    except ImportError:
        return None

    def make(resource: Resource) -> Any:
        observed = ObservedMetrics(resource, resource_constants(resource), trainer_pid,
                                   interval_s=settings.observe_interval_s, gpus=settings.gpus,
                                   observers=settings.observers, warn=warn, info=info,
                                   high_water=settings.phase_memory)
        observed.start()
        return observed

    return make


def build_service(run_dir: Path, settings: Settings, *, trainer_pid: int, extra_exporters: Sequence[Any] = (),
                  prometheus_port: int | None = None, warn: Warn, info: Callable[[str], None],
                  ) -> tuple[ExporterService, list[str]]:
    """The service and what it delivers to (for the console line and ``summary["experiment"]["targets"]``)."""
    targets = [f"files {run_dir / names.OTLP_DIR}"]
    _quiet_exporter_logs()
    otlp, described = otlp_destination(settings, warn)
    if described:
        targets.append(described)
    service = ExporterService(run_dir, settings, trainer_pid=trainer_pid, extra_exporters=extra_exporters,
                              observed=observers_factory(settings, trainer_pid, warn, info), otlp=otlp,
                              warn=warn)
    if prometheus_port:
        from lezea_otel.exporter.prometheus import LatestMetrics, ScrapeClock, serve

        collector, clock = LatestMetrics(before_scrape=service.refresh_prometheus), ScrapeClock()
        try:
            server, _thread = serve(prometheus_port, settings.prometheus_addr, collector, [clock])
        except OSError as error:
            warn("start", f"the Prometheus port {prometheus_port} cannot be served",
                 f"{error}; the run goes on without /metrics (pass prometheus_port=None to silence this)")
        else:
            service.attach_prometheus(collector, server, clock)
            targets.append(f"/metrics on {settings.prometheus_addr}:{prometheus_port}")
    return service, targets
