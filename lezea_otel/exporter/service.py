"""The exporter of one run: a follower per destination, the observers, the delivery metrics, ``/metrics``;
in a thread or a process.

Destinations, each followed on a thread of its own so that a collector that is down or slow holds up
only itself: the local OTLP-JSON files (with any test exporters and the Prometheus endpoint's latest
values) and, when an endpoint is configured, the collector. The trainer is watched by PID: gone
without its end record (kill -9, OOM), its open spans end truncated and its run ``crashed``.

:meth:`ExporterService.start` runs it on threads inside the trainer (``LEZEA_EXPORTER=thread``, and
what ``lezea_otel.testing.Capture`` uses); ``python -m lezea_otel.exporter`` runs the same service in a
process of its own (:mod:`.process`), and ``lezea-otel export`` over a finished or crashed run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData
from opentelemetry.sdk.trace.export import SpanExporter

from lezea_otel import semconv as names
from lezea_otel.config.settings import Settings
from lezea_otel.exporter.convert import merge_metrics
from lezea_otel.exporter.delivery_metrics import DeliveryMetrics
from lezea_otel.exporter.follow import STALL_S, Destination, Follower, wind_down
from lezea_otel.exporter.logs import LogRecordExporter
from lezea_otel.exporter.records import resource_constants
from lezea_otel.util.processes import alive
from lezea_otel.util.readable import error_text
from lezea_otel.util.safety import raise_internal, report_internal_error

Warn = Callable[[str, str, str], None]
POLL_S = 0.05
"""How often a follower looks at the audit (the trainer writes it at least every 200 ms)."""
WATCH_S = 0.5
"""How often the trainer's PID is checked."""
FINISH_REPORT_S = 0.2
"""How often the report is rewritten while the trainer's finalize waits on it."""


def local_destination(run_dir: Path, extra: Sequence[Any], on_metrics: Callable[[MetricsData], None] | None,
                      files: bool = True) -> Destination:
    """The run's ``otlp/`` files (the official OTLP-JSON file exporters) and the caller's own exporters."""
    spans: list[SpanExporter] = []
    logs: list[LogRecordExporter] = []
    metrics: list[MetricExporter] = []
    if files:
        from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter
        from opentelemetry.exporter.otlp.json.file._log_exporter import FileLogExporter

        folder = run_dir / names.OTLP_DIR
        folder.mkdir(parents=True, exist_ok=True)
        spans.append(FileSpanExporter(folder / "spans.jsonl"))
        logs.append(FileLogExporter(folder / "logs.jsonl"))
        metrics.append(FileMetricExporter(folder / "metrics.jsonl"))
    for exporter in extra:
        if isinstance(exporter, SpanExporter):
            spans.append(exporter)
        elif isinstance(exporter, LogRecordExporter):
            logs.append(exporter)
        elif isinstance(exporter, MetricExporter):
            metrics.append(exporter)
    return Destination(names.LOCAL_DESTINATION, spans, logs, metrics, retry=False, on_metrics=on_metrics)


class ExporterService:
    """Delivers one run to its destinations until its end record is delivered or its trainer is gone."""

    def __init__(self, run_dir: Path, settings: Settings, *, trainer_pid: int,
                 extra_exporters: Sequence[Any] = (), prometheus: Any = None, observed: Any = None,
                 otlp: Destination | None = None,
                 warn: Warn | None = None) -> None:
        """
        Args:
            prometheus: an object with ``update(source, data)`` (the ``/metrics`` endpoint's latest values).
            observed: an object with ``collect() -> MetricsData | None`` (observers and heartbeat), or a
                factory ``(resource) -> that object`` called once the trainer's resource is known.
            otlp: the collector destination, when an endpoint is configured.
        """
        self.run_dir = run_dir
        self.settings = settings
        self.trainer_pid = trainer_pid
        self._warn = warn
        self._prometheus = prometheus
        self._observed_factory = observed if callable(observed) and not hasattr(observed, "collect") else None
        self._observed = observed if self._observed_factory is None else None
        self._windows_observed: Any = None
        state_dir = run_dir / names.EXPORTER_DIR
        interval = settings.metric_export_interval_ms / 1000
        local = local_destination(run_dir, extra_exporters, self._to_prometheus)
        progress = (settings.progress_after_s, settings.progress_every_s)
        self.windows = self._make_windows(readers=2 if otlp is not None else 1)
        self.followers = [Follower(run_dir, local, state_dir=state_dir, metric_interval_s=interval,
                                   extra_metrics=self._extra_metrics, progress=progress,
                                   windows=self.windows)]
        if otlp is not None:
            self.followers.append(Follower(run_dir, otlp, state_dir=state_dir, metric_interval_s=interval,
                                           extra_metrics=self._extra_metrics, progress=progress,
                                           windows=self.windows))
        self._delivery: DeliveryMetrics | None = None
        """The delivery report as metrics, made with the observers once the trainer's resource is read."""
        for follower in self.followers:
            follower.destination.on_request = self._request_done
        self._locks = [threading.Lock() for _ in self.followers]
        self._final = threading.Event()
        self._threads: list[threading.Thread] = []
        self.crashed = False
        self.finishing = False
        """The trainer's finalize reached its end record and this process delivers the rest (``_finish``)."""
        self._finish_began = 0.0
        self._closed = False
        self._observed_lock = threading.Lock()
        self._prometheus_server: Any = None
        self._scrapes: Any = None

    @property
    def local(self) -> Follower:
        return self.followers[0]

    # --- running --------------------------------------------------------------------------------

    def start(self) -> None:
        """On threads of their own (daemon: an exporter never holds the interpreter's exit)."""
        for index, follower in enumerate(self.followers):
            thread = threading.Thread(target=self._follow, args=(index,), daemon=True,
                                      name=f"lezea-otel-export-{follower.destination.name}")
            thread.start()
            self._threads.append(thread)

    def run(self, watch: bool = True, problems: Sequence[str] = ()) -> None:
        """In the exporter's own process: follow until the run is delivered, or its trainer is gone;
        the report file is rewritten every second meanwhile (the trainer's live summary reads it)."""
        self.start()
        next_report = 0.0
        while any(thread.is_alive() for thread in self._threads):
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 1.0
                self._write_quietly(problems)
            if self._final.is_set():  # SIGTERM: the trainer gave up waiting and gives us a moment
                wind_down(self._pairs(), 0.5)
                return
            end_ns = self.local.end_time_ns
            # the trainer is finalizing: it waits from its end record
            if self.local.ended and end_ns is not None:
                waited = (time.time_ns() - end_ns) / 1e9
                bound = max(0.2, self.settings.shutdown_timeout_s - waited - 0.3)
                if self.settings.finish_window_s:
                    self._finish(bound + self.settings.finish_window_s, problems)
                else:
                    self._final.set()
                    wind_down(self._pairs(), bound)
                return
            if watch and not alive(self.trainer_pid):
                self.crashed = not self.local.ended
                self._final.set()
                wind_down(self._pairs(), max(30.0, self.settings.shutdown_timeout_s))
                return
            running = [thread for thread in self._threads if thread.is_alive()]
            if running:  # the local thread first: it ends as soon as the end record is in the files
                running[0].join(WATCH_S)

    def _finish(self, within_s: float, problems: Sequence[str]) -> None:
        """The trainer wrote its end record and waits for us, within its bound: every destination goes on
        delivering as during the run, a collector retried with backoff, for up to ``within_s`` (that bound
        plus ``LEZEA_FINISH_WINDOW``), whether or not the trainer is still there. The report is rewritten
        every 0.2 s meanwhile (``finishing``): the trainer stops waiting once the run's files are whole and
        a collector takes nothing (``stalled``), and leaves the rest to this process. ``/metrics`` closes
        once the trainer is gone. What is still not delivered at the end stays in the audit, counted."""
        self._finish_began = time.monotonic()
        self.finishing = True
        deadline = time.monotonic() + within_s
        next_report = 0.0
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                if self._final.is_set():  # SIGTERM: what is held is offered once more, then we stop
                    wind_down(self._pairs(), 0.5)
                    return
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + FINISH_REPORT_S
                    self._write_quietly(problems)
                if self._prometheus_server is not None and not alive(self.trainer_pid):
                    self.close_prometheus()
                thread.join(min(POLL_S, max(0.0, deadline - time.monotonic())))
        self._final.set()
        wind_down(self._pairs(), 0.5)  # past the window: given up on, left in the audit
        self.finishing = False

    def _pairs(self) -> list[tuple[Follower, threading.Thread]]:
        return list(zip(self.followers, self._threads, strict=True))

    def attach_prometheus(self, collector: Any, server: Any, scrapes: Any = None) -> None:
        """The ``/metrics`` endpoint: its latest values come from the local follower, brought up to
        date at each scrape (:meth:`refresh_prometheus`); the server is closed with the service, after
        one more scrape when Prometheus scrapes regularly (``scrapes``: a ScrapeClock), so a pulled run
        that ends between two scrapes is seen finished, not vanished."""
        self._prometheus, self._prometheus_server, self._scrapes = collector, server, scrapes

    def refresh_prometheus(self) -> None:
        """At a scrape: what the audit holds now, as the values Prometheus reads."""
        if self._closed or self._prometheus is None:
            return
        with self._locks[0]:
            self.local.poll()
            data = self.local.current_metrics()
        self._prometheus.update("run", data)

    def stop_following(self) -> None:
        """Deliver what the audit holds now and end (SIGTERM to the exporter process)."""
        self._final.set()

    def sync(self) -> None:
        """Deliver everything the audit holds now to the local destination, metrics included (tests)."""
        if self._closed:
            return
        with self._locks[0]:
            self.local.poll()
            self.local.send_metrics()

    def close(self, timeout_s: float) -> bool:
        """The trainer wrote its end record: deliver to the end within ``timeout_s``; True when done."""
        self._final.set()
        self._closed = True
        deadline = time.monotonic() + timeout_s
        done = wind_down(self._pairs(), timeout_s)
        if self._scrapes is not None:
            self._scrapes.wait_for_next(max(0.0, min(timeout_s / 2, deadline - time.monotonic())))
        self.stop_observers()
        self.close_prometheus()
        for follower in self.followers:
            follower.destination.shutdown()  # once; a follower still sending was given up on (stop_trying)
        return done

    def close_prometheus(self) -> None:
        server, self._prometheus_server = self._prometheus_server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def observed_totals(self) -> dict[str, Any]:
        """The observers' run totals so far (the trainer's ``resource_totals`` record in thread mode);
        still readable after :meth:`stop_observers`, with the last sample in them."""
        with self._observed_lock:
            observed = self._observed
        totals: dict[str, Any] = observed.totals() if observed is not None else {}
        return totals

    def scope_summaries(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The resources measured per scope path (``"scopes"``) and phase name (``"phases"``) so far, folded
        as the run's summary folds them; ``{}`` without scope windows (see ``observe.ScopeWindows``)."""
        windows = getattr(self, "windows", None)  # set in __init__ once the followers take it
        return windows.summaries() if windows is not None else {}

    def sample_observers(self) -> bool:
        """A sample of the trainer's tree and GPUs now, as the sampler takes one every interval (a test
        forces one rather than wait); what the audit holds is read first, so that the observers exist.
        False without observers."""
        self.sync()
        with self._observed_lock:
            observed = self._observed_now()
        return bool(observed.sample()) if observed is not None and hasattr(observed, "sample") else False

    def stop_observers(self) -> None:
        """The last sample, then NVML released; the observers stay readable (their final collection,
        their totals) and make no new one."""
        with self._observed_lock:
            observed, self._observed_factory = self._observed, None
        if observed is not None:
            observed.stop()

    def _make_windows(self, readers: int) -> Any:
        """Per-scope resource windows (``LEZEA_SCOPE_RESOURCES``) for ``readers`` followers, when there
        are observers to measure them; None otherwise."""
        if not self.settings.observers or not self.settings.scope_resources or \
                (self._observed is None and self._observed_factory is None):
            return None
        try:
            from lezea_otel.exporter.observe import ScopeWindows
        except ImportError:  # no psutil: no observers either
            return None
        return ScopeWindows(self._window_observed, self.settings.scope_resources, readers=readers)

    def _window_observed(self) -> Any:
        """What the scope windows measure with: asked at every phase, so the observers are looked up
        under the lock only until they exist (then they are the same object to the end)."""
        observed = self._windows_observed
        if observed is None:
            with self._observed_lock:
                observed = self._observed_now()
            if not hasattr(observed, "open_window"):
                return None
            self._windows_observed = observed
        return observed

    def report(self) -> dict[str, Any]:
        """What each destination got, by its name: the run's delivery report (``summary["delivery"]``).
        While finishing, a collector not done that took nothing for ``STALL_S`` is ``stalled``: the
        trainer's finalize stops waiting for it (this process goes on retrying)."""
        now = time.monotonic()
        report = {}
        for follower in self.followers:
            report[follower.destination.name] = made = follower.report()
            if self.finishing and follower.destination.retry and not follower.ended:
                made["stalled"] = now - max(self._finish_began, follower.destination.last_taken) >= STALL_S
        return report

    def write_report(self, problems: Sequence[str] = ()) -> None:
        """For the trainer's summary (it reads the file at finalize) and ``lezea-otel`` afterwards."""
        path = self.run_dir / names.EXPORTER_DIR / names.EXPORTER_REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(orjson.dumps({"crashed": self.crashed, "problems": list(problems),
                                            "finishing": self.finishing, "pid": os.getpid(),
                                            "destinations": self.report(), "observed": self.observed_totals(),
                                            "scope_resources": self.scope_summaries()}))
        os.replace(temporary, path)

    # --- internals --------------------------------------------------------------------------------

    def _write_quietly(self, problems: Sequence[str]) -> None:
        with contextlib.suppress(OSError):  # a full disk: the final report is tried again at the end
            self.write_report(problems)

    def _follow(self, index: int) -> None:
        follower, lock = self.followers[index], self._locks[index]
        try:
            while not follower.ended:
                if self._final.is_set():
                    break
                with lock:
                    moved = follower.poll()
                if not moved:
                    self._final.wait(POLL_S)
            with lock:
                follower.finish(self.crashed, None)
        except Exception as error:
            if raise_internal():
                raise
            report_internal_error(f"exporter ({follower.destination.name})", error)

    def _extra_metrics(self) -> MetricsData | None:
        with self._observed_lock:  # two followers ask: one set of observers
            observed = self._observed_now()
            delivery = self._delivery_now()
            return merge_metrics([observed.collect() if observed is not None else None,
                                  delivery.collect() if delivery is not None else None])

    def _delivery_now(self) -> DeliveryMetrics | None:
        """Under ``_observed_lock``: the delivery metrics, made once a follower has read the resource."""
        if self._delivery is None:
            resource = next((f.resource for f in self.followers if f.resource is not None), None)
            if resource is not None:
                self._delivery = DeliveryMetrics(resource, resource_constants(resource), self.followers)
        return self._delivery

    def _request_done(self, destination: str, signal: str, seconds: float) -> None:
        with self._observed_lock:
            delivery = self._delivery_now()
        if delivery is not None:
            delivery.request_done(destination, signal, seconds)

    def _observed_now(self) -> Any:
        """Under ``_observed_lock``: the observers, made once a follower has read the trainer's resource."""
        if self._observed is None and self._observed_factory is not None:
            resource = next((f.resource for f in self.followers if f.resource is not None), None)
            if resource is None:
                return None
            try:
                self._observed = self._observed_factory(resource)
            except Exception as error:  # noqa: BLE001 - observers refused: the run goes on without them
                self._observed_factory = None
                if self._warn is not None:
                    self._warn("start", "resource observers could not start", error_text(error))
                return None
            self._observed_factory = None
        return self._observed

    def _to_prometheus(self, data: MetricsData) -> None:
        if self._prometheus is not None:
            self._prometheus.update("run", data)
