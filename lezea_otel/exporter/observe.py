"""The trainer's process tree, its GPUs and the run's heartbeat, observed from the exporter.

Record metrics are rebuilt from the audit; these have no record: they are read from psutil and NVML
while the run lives. So they come from a real SDK ``MeterProvider`` with observable instruments (the
same ``Observers`` the trainer used to run in-process), read through an ``InMemoryMetricReader`` into
``MetricsData`` that the followers merge with the record metrics and send to every destination.

The exporter may be a separate process, so everything is about the trainer's pid, never
``os.getpid()``: the process tree sampled is the trainer's (children included), and the heartbeat
is observed only while that process runs, so a dead trainer's heartbeat goes stale even while its
exporter still delivers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource

from .._internal import names
from .._internal.observers import Observers
from .._internal.readable import error_text
from .._internal.safety import report_internal_error
from ..version import __version__

Warn = Callable[[str, str, str], None]

HEARTBEAT_DESCRIPTION = "Unix time at each collection while the process lives; a stale value means a dead run"
"""As the trainer's own heartbeat had it (``_internal/metrics.py``): dashboards key on the same metric."""


class _Liveness:
    """Whether the watched process still runs: a reaped pid, a zombie or a reused pid is dead."""

    def __init__(self, pid: int) -> None:
        self._process: psutil.Process | None = None
        self._known = True
        try:
            self._process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            pass
        except psutil.Error:  # not ours to inspect: never report a run dead on that account
            self._known = False

    def alive(self) -> bool:
        if not self._known:
            return True
        process = self._process
        if process is None:
            return False
        try:  # is_running() compares the creation time, so a reused pid is not taken for the trainer
            return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True


class ObservedMetrics:
    """Observers of one trainer process (by pid) plus the run's liveness gauge, as MetricsData on demand."""

    def __init__(self, resource: Resource, constant_attributes: dict[str, Any], pid: int, *, interval_s: float,
                 gpus: str, observers: bool, warn: Warn, info: Callable[[str], None]) -> None:
        """
        Args:
            resource: the trainer's (from its ``experiment_start`` record), not the exporter's.
            constant_attributes: on every point, as the trainer's own metrics carry them.
            pid: the trainer's process; its whole tree is sampled.
            interval_s: between two samples of psutil and NVML (collections read the latest sample).
            gpus: which GPUs (``LEZEA_GPUS``: ``job``, ``all`` or UUIDs).
            observers: False leaves only the heartbeat.
            warn, info: the run's once-per-problem warning and its console line.
        """
        self._constant = dict(constant_attributes)
        self._pid = pid
        self._interval = interval_s
        self._gpus = gpus
        self._wanted = observers
        self._warn = warn
        self._info = info
        self._reader = InMemoryMetricReader()
        # shutdown_on_exit=False: stop() ends it; an atexit hook per run would outlive the run
        self._provider = MeterProvider(metric_readers=[self._reader], resource=resource, shutdown_on_exit=False)
        self._meter = self._provider.get_meter(names.INSTRUMENTATION_NAME, __version__)
        self._liveness = _Liveness(pid)
        self._meter.create_observable_gauge(names.RUN_HEARTBEAT, [self._heartbeat], unit=names.UNIT_SECONDS,
                                            description=HEARTBEAT_DESCRIPTION)
        self._observers: Observers | None = None
        self._lock = threading.Lock()
        """Orders collections against start and stop; two followers collect from two threads."""
        self._started = False
        self._stopping = False
        self._stopped = False
        self._final: MetricsData | None = None

    def _heartbeat(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(time.time(), self._constant)] if self._liveness.alive() else []

    def start(self) -> None:
        """Start sampling the trainer's tree (when observers are on). Never raises: observers that cannot
        start cost one warning and their metrics; the heartbeat goes on."""
        with self._lock:
            if self._started or self._stopping:
                return
            self._started = True
        if not self._wanted:
            return
        try:
            observers = Observers(self._meter, self._constant, self._interval, self._gpus, self._warn,
                                  self._info, pid=self._pid)
        except Exception as error:  # noqa: BLE001 - the pid is gone, psutil refused, /proc unreadable, ...
            self._warn("start", "resource observers could not start", error_text(error))
            return
        try:
            observers.start()
        except Exception as error:  # noqa: BLE001 - the first sample failed: no sampler, GPUs released
            self._warn("start", "resource observers could not start", error_text(error))
            self._quietly_stop(observers)
            return
        with self._lock:
            if not self._stopping:
                self._observers = observers
                return
        self._quietly_stop(observers)  # stop() ran meanwhile and found nothing to stop

    def collect(self) -> MetricsData | None:
        """The current cumulative data (observer instruments and the heartbeat); after :meth:`stop`, the
        last collection stop took, every time (a follower's final send still has it). Thread-safe."""
        with self._lock:
            if self._stopped:
                return self._final
            return self._read()

    def _read(self) -> MetricsData | None:
        try:
            return self._reader.get_metrics_data()
        except Exception as error:  # noqa: BLE001 - a collection that fails costs this collection only
            report_internal_error("observers", error)
            return None

    def totals(self) -> dict[str, Any]:
        """What the run's ``resource_totals`` holds (CPU hours, peaks, energy, GPUs); ``{}`` without
        observers. Still readable after :meth:`stop`."""
        observers = self._observers
        return observers.totals() if observers is not None else {}

    def stop(self) -> None:
        """Take a last sample, keep a last collection for :meth:`collect`, shut the provider down.
        Idempotent; collections made meanwhile read live data."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            observers = self._observers
        try:
            if observers is not None:
                self._quietly_stop(observers)
            with self._lock:
                self._final = self._read()
                self._stopped = True
        finally:
            self._provider.shutdown()

    @staticmethod
    def _quietly_stop(observers: Observers) -> None:
        try:
            observers.stop()
        except Exception as error:  # noqa: BLE001 - the last sample failed: the earlier ones stand
            report_internal_error("observers", error)
