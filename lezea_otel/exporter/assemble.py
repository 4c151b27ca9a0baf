"""One exporter service from the run's settings: the same assembly in a thread, a process, or ``export``.

What ``start()`` used to build in the training process (OTLP exporters, the ``/metrics`` endpoint,
the observers) is built here, beside the trainer, around the run's audit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource

from .._internal import names
from .._internal.readable import error_text
from .._internal.settings import Settings, exporter_environment
from .follow import Destination
from .service import ExporterService

Warn = Callable[[str, str, str], None]


def otlp_destination(settings: Settings, warn: Warn) -> tuple[Destination | None, str | None]:
    """The collector, when an endpoint is configured: (destination, its description) or (None, None)."""
    if settings.sdk_disabled or not settings.otlp_signals:
        return None, None
    from .._internal.delivery import _otlp_exporters

    try:
        with exporter_environment(settings):
            exporters = _otlp_exporters(settings)
    except Exception as error:  # noqa: BLE001 - a bad certificate path, a missing extra
        warn("start", "OTLP exporters could not be created", f"{error_text(error)}; local only")
        return None, None
    if not exporters:
        return None, None
    destination = Destination("otlp", [exporters["traces"]] if "traces" in exporters else [],
                              [exporters["logs"]] if "logs" in exporters else [],
                              [exporters["metrics"]] if "metrics" in exporters else [], retry=True)
    return destination, (f"OTLP {settings.protocol} {settings.endpoint or '(OTEL_EXPORTER_OTLP_* variables)'}"
                         f" [{', '.join(sorted(exporters))}]")


def observers_factory(settings: Settings, trainer_pid: int, warn: Warn,
                      info: Callable[[str], None]) -> Callable[[Resource], Any] | None:
    """Observers of the trainer's process tree and the heartbeat, made once the trainer's resource is read."""
    try:
        from .observe import ObservedMetrics
    except ImportError:
        return None

    def make(resource: Resource) -> Any:
        attributes = resource.attributes
        constant = {names.EXPERIMENT_ID: attributes.get(names.EXPERIMENT_ID, ""),
                    names.EXPERIMENT_NAME: attributes.get(names.EXPERIMENT_NAME, "")}
        observed = ObservedMetrics(resource, constant, trainer_pid, interval_s=settings.observe_interval_s,
                                   gpus=settings.gpus, observers=settings.observers, warn=warn, info=info)
        observed.start()
        return observed

    return make


def build_service(run_dir: Path, settings: Settings, *, trainer_pid: int, extra_exporters: Sequence[Any] = (),
                  prometheus_port: int | None = None, warn: Warn, info: Callable[[str], None],
                  ) -> tuple[ExporterService, list[str]]:
    """The service and what it delivers to (for the console line and ``summary["experiment"]["targets"]``)."""
    targets = [f"files {run_dir / names.OTLP_DIR}"]
    otlp, described = otlp_destination(settings, warn)
    if described:
        targets.append(described)
    service = ExporterService(run_dir, settings, trainer_pid=trainer_pid, extra_exporters=extra_exporters,
                              observed=observers_factory(settings, trainer_pid, warn, info), otlp=otlp, warn=warn)
    if prometheus_port:
        from .prometheus import LatestMetrics, ScrapeClock, serve

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
