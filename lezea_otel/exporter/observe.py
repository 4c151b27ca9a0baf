"""The trainer's process tree, its GPUs and the run's heartbeat, observed from the exporter.

Record metrics are rebuilt from the audit; these have no record: they are read from psutil and NVML
while the run lives. So they come from a real SDK ``MeterProvider`` with observable instruments (the
same ``Observers`` the trainer used to run in-process), read through an ``InMemoryMetricReader`` into
``MetricsData`` that the followers merge with the record metrics and send to every destination.

The exporter may be a separate process, so everything is about the trainer's pid, never
``os.getpid()``: the process tree sampled is the trainer's (children included), and the heartbeat
is observed only while that process runs, so a dead trainer's heartbeat goes stale even while its
exporter still delivers.

The same observers measure each scope's and phase's resources (:class:`ScopeWindows`, fed by the
span builder as it reads their records): the trainer no longer knows them, so they are on the spans
and in the exporter's report (``scope_resources``), not in the audit.
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

from lezea_otel import semconv as names
from lezea_otel.exporter.observers import POINT_GAP_S, Observers
from lezea_otel.model.run_state import MAX_ENTRIES, OTHER, add_resources
from lezea_otel.util.readable import error_text
from lezea_otel.util.safety import report_internal_error
from lezea_otel.version import __version__

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

    def __init__(self, resource: Resource, constant_attributes: dict[str, Any], pid: int, *,
                 interval_s: float, gpus: str, observers: bool, warn: Warn, info: Callable[[str], None],
                 point_gap_s: float = POINT_GAP_S, high_water: bool = False) -> None:
        """
        Args:
            resource: the trainer's (from its ``experiment_start`` record), not the exporter's.
            constant_attributes: on every point, as the trainer's own metrics carry them.
            pid: the trainer's process; its whole tree is sampled.
            interval_s: between two samples of psutil and NVML (collections read the latest sample).
            gpus: which GPUs (``LEZEA_GPUS``: ``job``, ``all`` or UUIDs).
            observers: False leaves only the heartbeat.
            warn, info: the run's once-per-problem warning and its console line.
            point_gap_s: the least time between two points taken for scope boundaries.
            high_water: scopes' and phases' peak RSS from the trainer's high-water mark
                (``LEZEA_PHASE_MEMORY``, ``exporter.watermark``), not from the samples.
        """
        self._high_water = high_water
        self._constant = dict(constant_attributes)
        self._pid = pid
        self._interval = interval_s
        self._gpus = gpus
        self._wanted = observers
        self._point_gap = point_gap_s
        self._warn = warn
        self._info = info
        self._reader = InMemoryMetricReader()
        # shutdown_on_exit=False: stop() ends it; an atexit hook per run would outlive the run
        self._provider = MeterProvider(metric_readers=[self._reader], resource=resource,
                                       shutdown_on_exit=False)
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
                                  self._info, pid=self._pid, point_gap_s=self._point_gap,
                                  high_water=self._high_water)
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

    def sample(self) -> bool:
        """A full sample now, as the sampler thread takes one every interval (a test forcing one, so it
        need not wait); False without observers."""
        observers = self._observers
        if observers is None:
            return False
        observers.sample()
        return True

    def open_window(self, start_ns: int) -> int | None:
        """A resource window from ``start_ns`` (see ``Observers.open_window``); None without observers."""
        observers = self._observers
        if observers is None:
            return None
        try:
            return observers.open_window(start_ns)
        except Exception as error:  # noqa: BLE001 - psutil or NVML failing costs this window only
            report_internal_error("observers", error)
            return None

    def close_window(self, token: int, end_ns: int) -> dict[str, Any]:
        """The window's summary at ``end_ns`` (``names.SCOPE_*``); ``{}`` when it cannot be had."""
        observers = self._observers
        if observers is None:
            return {}
        try:
            return observers.close_window(token, end_ns)
        except Exception as error:  # noqa: BLE001 - psutil or NVML failing costs this window only
            report_internal_error("observers", error)
            return {}

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


MAX_KEPT = 10_000
"""Summaries kept for followers that have not read a scope's end yet (a collector down for a while);
past it the oldest go first, and a follower that far behind gets none for them."""


class ScopeWindows:
    """Resource summaries of scopes and phases, measured here from the trainer's process tree.

    ``LEZEA_SCOPE_RESOURCES`` says which levels get one (``phase`` for phases). A scope's window opens
    when its ``scope_start`` is read and closes at its ``scope_end`` (a phase, written once at its end,
    opens and closes at once, back from its end by its duration); the figures are estimated at the
    records' own times from the observers' points, so their precision is that of the points around
    each boundary (``_internal/observers.py`` says how, and when a summary is marked approximate).

    Shared by the service's followers: each span is measured once, by the first follower to read its
    records, and each of the ``readers`` followers gets the same figures (one further behind, because
    its collector was down, gets the kept result). Thread-safe.
    """

    def __init__(self, observed: Callable[[], ObservedMetrics | None], levels: Iterable[str], *,
                 readers: int = 1, keep: int = MAX_KEPT) -> None:
        """
        Args:
            observed: the service's observers, made once the trainer's resource is known (or None).
            levels: the scope levels measured (``settings.scope_resources``).
            readers: the followers that will ask for each span (one per destination).
        """
        self._observed = observed
        self.levels = frozenset(levels)
        self._readers = max(1, readers)
        self._keep = keep
        self._lock = threading.Lock()
        self._open: dict[int, tuple[ObservedMetrics, int]] = {}
        self._done: dict[int, tuple[dict[str, Any], int]] = {}
        """Summaries some followers have not asked for yet, and how many still will."""
        self._summaries: dict[str, dict[str, dict[str, Any]]] = {"scopes": {}, "phases": {}}

    def open(self, span_id: int, level: str, start_ns: int) -> None:
        """A scope (or phase) of ``level`` started at ``start_ns``; a second open of it does nothing."""
        if level not in self.levels:
            return
        try:
            self._open_window(span_id, start_ns)
        except Exception as error:  # noqa: BLE001 - a measurement must never cost the span
            report_internal_error("scope resources", error)

    def _open_window(self, span_id: int, start_ns: int) -> None:
        with self._lock:
            if span_id in self._open or span_id in self._done:
                return
            observed = self._observed()
            token = observed.open_window(start_ns) if observed is not None else None
            if observed is not None and token is not None:
                self._open[span_id] = (observed, token)

    def close(self, span_id: int, end_ns: int, key: tuple[str, str]) -> dict[str, Any]:
        """The span's summary (``names.SCOPE_*`` attributes), or ``{}`` when none was measured.

        ``key``: where the run's summary shows it, ``("scopes", scope path)`` or ``("phases", name)``.
        """
        try:
            return self._close_window(span_id, end_ns, key)
        except Exception as error:  # noqa: BLE001 - a measurement must never cost the span
            report_internal_error("scope resources", error)
            return {}

    def _close_window(self, span_id: int, end_ns: int, key: tuple[str, str]) -> dict[str, Any]:
        with self._lock:
            done = self._done.pop(span_id, None)
            if done is not None:
                summary, waiting = done
                if waiting > 1:
                    self._done[span_id] = (summary, waiting - 1)
                return dict(summary)
            opened = self._open.pop(span_id, None)
            if opened is None:
                return {}
            observed, token = opened
            summary = observed.close_window(token, end_ns)
            if not summary:
                return {}
            self._add(key, summary)
            if self._readers == 1:
                return summary  # made for this close, kept nowhere: the caller's own
            self._done[span_id] = (summary, self._readers - 1)
            while len(self._done) > self._keep:
                del self._done[next(iter(self._done))]
            return dict(summary)

    def summaries(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per scope path and phase name, as the run's summary folds them (``run_state``): CPU seconds and
        energy summed, peaks the largest, a mean the last one (``*_last``), ``approximate`` a count."""
        with self._lock:
            return {section: {name: dict(entry) for name, entry in entries.items()}
                    for section, entries in self._summaries.items()}

    def _add(self, key: tuple[str, str], summary: dict[str, Any]) -> None:
        section, name = key
        table = self._summaries.setdefault(section, {})
        if name not in table and len(table) >= MAX_ENTRIES:
            name = OTHER  # as the run's summary folds past its cap
        entry = table.setdefault(name, {"measured": 0})
        entry["measured"] += 1
        add_resources(entry, summary)
