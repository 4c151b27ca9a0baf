"""Automatic observers of a process tree: one sampler thread, observable instruments that read its
latest snapshot, per-scope resource windows, and run totals.

The sampler runs every ``interval_s`` on a thread of its own; metric callbacks never call NVML or
psutil, they read the last snapshot. The tree observed is any process's (``pid``): the exporter
watches its trainer from outside, so nothing here runs on the training thread.

Scope windows (:meth:`Observers.open_window` / :meth:`Observers.close_window`) are cut from *points*:
the tree's cumulative CPU time (psutil, children included) and each GPU's energy counter at known
wall-clock times (``_internal/windows.py``). A boundary (a scope's start or end, at the time its
record says) is estimated by linear interpolation between the points around it, the start only when
the window closes, so that points taken after it bracket it too. A point is taken when the exporter
reads a boundary, unless one taken after the boundary exists already: the records of one poll (the
trainer writes its audit in batches, every 200 ms) cost one point, however many scopes and phases
they hold. A point walks the whole process table (milliseconds), so one less than ``point_gap_s``
after the last is not taken either: a boundary then counts up to the last point only. The figures
are the tree's, never the reader's own ``process_time``, and as precise as the points around each
boundary are close to it:

- a scope whose start and end are each read soon after they happen (the exporter keeping up, polling
  every 50 ms) is measured to within the read latency, ``point_gap_s`` and psutil's clock tick
  (10 ms a process);
- a scope shorter than that (start and end read in one poll), a phase (its one record is written at
  its end), or a backlog read late, gets the tree's average rate between the surrounding points times
  its duration; a scope that began before the observers' first point is counted from that point;
- either way the span says ``lezea.resource.approximate`` when the boundaries' uncertainty exceeds a
  tenth of its duration. Peaks (RSS, GPU memory) are the largest values sampled from the last point
  before the start until the end was read; GPU utilization is the mean of the full samples inside,
  else the latest one. In a thread of the trainer (``LEZEA_EXPORTER=thread``) the tree includes the
  exporter itself.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from lezea_otel import semconv as names
from lezea_otel.exporter.gpu_sampler import GpuReading, GpuSampler
from lezea_otel.exporter.process_sampler import ProcessSampler, TreeSample
from lezea_otel.exporter.watermark import Watermark
from lezea_otel.exporter.windows import APPROXIMATE_FRACTION, History, Point
from lezea_otel.util.safety import report_internal_error

Warn = Callable[[str, str, str], None]


POINT_GAP_S = 0.05
"""The least time between two points taken for boundaries: the exporter's poll interval."""


@dataclass
class _Span:
    """An open window: when it began, and the peaks of the points since."""

    start_ns: int
    rss_peak: int
    gpu_memory_peak: int
    utilization_sum: float = 0.0
    utilization_count: int = 0


class Observers:
    """Samples one process tree (and the run's GPUs) for the instruments registered on ``meter``."""

    def __init__(self, meter: Meter, constant_attributes: dict[str, Any], interval_s: float, gpus: str,
                 warn: Warn, info: Callable[[str], None], pid: int | None = None,
                 point_gap_s: float = POINT_GAP_S, high_water: bool = False) -> None:
        self._constant = constant_attributes
        self._interval = interval_s
        self._point_gap_ns = int(point_gap_s * 1e9)
        self._process = ProcessSampler(pid) if pid else ProcessSampler()
        self._gpu = GpuSampler.open(gpus, warn, info)
        self._watermark = Watermark.open(pid or os.getpid()) if high_water else None
        """The trainer's own peak RSS over any stretch, exactly (``exporter.watermark``)."""
        self.tree: TreeSample | None = None
        self.gpus: list[GpuReading] = []
        self._spans: dict[int, _Span] = {}
        self._history = History()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        """Guards the state the callbacks, windows and totals read."""
        self._sample_lock = threading.Lock()
        """One reading of psutil and NVML at a time (the sampler thread, the exporter's followers)."""
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pcie_bytes: dict[tuple[str, str], float] = {}
        self._first_energy: dict[str, float] = {}
        self._last_energy: dict[str, float] = {}
        self._busy_seconds: dict[str, float] = {}
        self._peaks = {"rss": 0}
        self._gpu_memory_peaks: dict[str, int] = {}
        self.samples = 0
        self._last_sample_time: float | None = None
        self._register(meter)

    # --- sampling ------------------------------------------------------------------------------

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="lezea-otel-observers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except Exception as error:  # noqa: BLE001 - an observer fault costs one sample, not the sampler
                report_internal_error("observers", error)

    def stop(self) -> None:
        """Stop the sampler, take a last sample, release NVML; windows closed later use the points so far."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(1.0, self._interval))
        try:
            self.sample()
        finally:  # NVML is released even when the last sample fails
            if self._watermark is not None:
                self._watermark.close()
            with self._sample_lock:
                self._closed = True
                if self._gpu is not None:
                    self._gpu.close()

    def sample(self) -> None:
        """A full sample: the tree, every GPU field; what the instruments export until the next one."""
        with self._sample_lock:
            if self._closed:
                return
            before = time.time_ns()
            tree = self._process.sample()
            gpus = self._gpu.sample() if self._gpu is not None else []
            point = Point((before + time.time_ns()) // 2, tree.cpu_user_s + tree.cpu_system_s, tree.rss_bytes,
                          {r.uuid: r.energy_j for r in gpus if r.energy_j is not None})
            self._record(tree, gpus, point)

    def _record(self, tree: TreeSample, gpus: list[GpuReading], point: Point) -> None:
        now = time.monotonic()
        elapsed = now - self._last_sample_time if self._last_sample_time is not None else 0.0
        with self._lock:
            for reading in gpus:
                if reading.utilization is not None:
                    self._busy_seconds[reading.uuid] = self._busy_seconds.get(reading.uuid, 0.0) + \
                        reading.utilization * elapsed
                if reading.energy_j is not None:
                    self._first_energy.setdefault(reading.uuid, reading.energy_j)
                    self._last_energy[reading.uuid] = reading.energy_j  # kept if the device is lost later
                for direction, rate in (("transmit", reading.pcie_tx_kbs), ("receive", reading.pcie_rx_kbs)):
                    if rate is not None:  # KB/s integrated into a byte counter
                        key = (reading.uuid, direction)
                        self._pcie_bytes[key] = self._pcie_bytes.get(key, 0.0) + rate * 1024 * elapsed
                if reading.memory_used is not None:
                    self._gpu_memory_peaks[reading.uuid] = max(self._gpu_memory_peaks.get(reading.uuid, 0),
                                                               self._tree_gpu_memory(reading, tree))
            gpu_memory = sum(self._tree_gpu_memory(r, tree) for r in gpus)
            utilization = [r.utilization for r in gpus if r.utilization is not None]
            self._add_point(point)
            for span in self._spans.values():
                span.gpu_memory_peak = max(span.gpu_memory_peak, gpu_memory)
                span.utilization_sum += sum(utilization)
                span.utilization_count += len(utilization)
            self.tree, self.gpus = tree, gpus
            self.samples += 1
            self._last_sample_time = now

    def _add_point(self, point: Point) -> None:
        """Under ``_lock``."""
        self._history.add(point)
        self._peaks["rss"] = max(self._peaks["rss"], point.rss)
        for span in self._spans.values():
            span.rss_peak = max(span.rss_peak, point.rss)

    def _point_after(self, time_ns: int) -> None:
        """A point after ``time_ns``: the tree and each GPU's energy counter read now, unless a later
        point exists already or the latest is younger than ``point_gap_s``. The instruments' snapshot
        is left alone: a reading a few milliseconds after the last one would make a noisy utilization."""
        with self._sample_lock:
            latest = self._history.latest
            before = time.time_ns()
            if self._closed or (latest is not None and (latest.time_ns >= time_ns
                                                        or before - latest.time_ns < self._point_gap_ns)):
                return
            tree = self._process.sample(rate=False)
            energy: dict[str, float] = {}
            gpu = self._gpu
            if gpu is not None:
                for device in gpu.devices:
                    joules = gpu.energy(device)
                    if joules is not None:
                        energy[device.uuid] = joules
            point = Point((before + time.time_ns()) // 2, tree.cpu_user_s + tree.cpu_system_s, tree.rss_bytes,
                          energy)
            with self._lock:
                self._add_point(point)

    @staticmethod
    def _tree_gpu_memory(reading: GpuReading, tree: TreeSample) -> int:
        return sum(m for pid, m in reading.process_memory.items() if pid in tree.pids and m is not None)

    # --- windows ------------------------------------------------------------------------------

    def open_window(self, start_ns: int) -> int | None:
        """A window from ``start_ns`` (a record's time, perhaps some way back); None once stopped."""
        self._point_after(start_ns)
        with self._lock:
            if self._closed:
                return None
            tree, gpus = self.tree, self.gpus
            gpu_memory = sum(self._tree_gpu_memory(r, tree) for r in gpus) if tree is not None and gpus else 0
            token = next(self._ids)
            self._spans[token] = _Span(start_ns, self._history.peak_rss(start_ns), gpu_memory)
        return token

    def close_window(self, token: int, end_ns: int) -> dict[str, Any]:
        """The window's summary at ``end_ns`` (``names.SCOPE_*``); ``{}`` for a token not open."""
        with self._lock:
            if token not in self._spans:
                return {}
        self._point_after(end_ns)
        with self._lock:
            span = self._spans.pop(token, None)
            if span is None:
                return {}
            start = self._history.at(span.start_ns)  # (cpu_s, energy, rss, uncertainty_s)
            end = self._history.at(end_ns)
            latest = [r.utilization for r in self.gpus if r.utilization is not None] if self.gpus else []
        if start is None or end is None:
            return {}
        out: dict[str, Any] = {names.SCOPE_CPU_SECONDS: max(0.0, end[0] - start[0]),
                               names.SCOPE_MEMORY_PEAK: float(span.rss_peak),
                               names.SCOPE_MEMORY_METHOD: "sampled"}
        watermark = self._watermark
        if watermark is not None:
            watermark.covering(end_ns)
            peak = watermark.peak(span.start_ns, end_ns)
            if peak is not None:
                out[names.SCOPE_MEMORY_PEAK], out[names.SCOPE_MEMORY_METHOD] = float(peak), "high-water"
        if self._gpu is not None:
            end_energy = end[1]
            out[names.SCOPE_GPU_ENERGY] = sum(max(0.0, end_energy[uuid] - joules)
                                              for uuid, joules in start[1].items() if uuid in end_energy)
            out[names.SCOPE_GPU_MEMORY_PEAK] = float(span.gpu_memory_peak)
            if span.utilization_count:
                out[names.SCOPE_GPU_UTILIZATION_MEAN] = span.utilization_sum / span.utilization_count
            elif latest:
                out[names.SCOPE_GPU_UTILIZATION_MEAN] = sum(latest) / len(latest)
        duration_s = max(0, end_ns - span.start_ns) / 1e9
        uncertainty_s = start[3] + end[3]
        out[names.SCOPE_RESOURCES_APPROXIMATE] = uncertainty_s > APPROXIMATE_FRACTION * duration_s
        return out

    # --- totals -------------------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        tree = self.tree
        with self._lock:
            energy = {uuid: last - self._first_energy[uuid] for uuid, last in self._last_energy.items()}
            return {
                "samples": self.samples,
                "cpu_hours": (tree.cpu_user_s + tree.cpu_system_s) / 3600 if tree else 0.0,
                "memory_peak_bytes": self._peaks["rss"],
                "processes": tree.processes if tree else 0,
                "gpu_hours": sum(self._busy_seconds.values()) / 3600,
                "energy_joules": {"total": sum(energy.values()), **energy},
                "gpu_memory_peak_bytes": dict(self._gpu_memory_peaks),
                "gpus": [{names.HW_ID: d.uuid, "name": d.name, "index": d.index} for d in self._gpu.devices]
                if self._gpu else [],
            }

    # --- instruments --------------------------------------------------------------------------

    def _register(self, meter: Meter) -> None:
        def gauge(name: str, unit: str, read: Callable[[], Iterable[tuple[float | None, dict[str, Any]]]],
                  kind: str = "gauge") -> None:
            def callback(_options: CallbackOptions) -> list[Observation]:
                return [Observation(v, {**self._constant, **a}) for v, a in read() if v is not None]
            create = {"gauge": meter.create_observable_gauge, "counter": meter.create_observable_counter,
                      "updown": meter.create_observable_up_down_counter}[kind]
            create(name, [callback], unit=unit)

        def tree(
            read: Callable[[TreeSample], Iterable[tuple[float | None, dict[str, Any]]]],
        ) -> Callable[[], Any]:
            return lambda: list(read(self.tree)) if self.tree is not None else []

        gauge(names.PROCESS_CPU_TIME, names.UNIT_SECONDS, tree(lambda t: [
            (t.cpu_user_s, {names.CPU_MODE: "user"}),
            (t.cpu_system_s, {names.CPU_MODE: "system"})]), "counter")
        gauge(names.PROCESS_CPU_UTILIZATION, names.UNIT_RATIO, tree(lambda t: [(t.utilization, {})]))
        gauge(names.PROCESS_MEMORY_USAGE, names.UNIT_BYTES, tree(lambda t: [(t.rss_bytes, {})]), "updown")
        gauge(names.PROCESS_THREAD_COUNT, "{thread}", tree(lambda t: [(t.threads, {})]), "updown")
        gauge(names.PROCESS_COUNT, "{process}", tree(lambda t: [(t.processes, {})]), "updown")
        if self._process.io_supported:
            gauge(names.PROCESS_DISK_IO, names.UNIT_BYTES, tree(lambda t: [
                (t.read_bytes, {names.DISK_IO_DIRECTION: "read"}),
                (t.write_bytes, {names.DISK_IO_DIRECTION: "write"})]), "counter")
        gauge(names.SYSTEM_CPU_UTILIZATION, names.UNIT_RATIO, tree(lambda t: [(t.host_cpu_utilization, {})]))
        gauge(names.SYSTEM_MEMORY_USAGE, names.UNIT_BYTES,
              tree(lambda t: [(t.host_memory_used, {names.MEMORY_STATE: "used"})]), "updown")
        gauge(names.SYSTEM_MEMORY_UTILIZATION, names.UNIT_RATIO,
              tree(lambda t: [
                  (t.host_memory_used / t.host_memory_total if t.host_memory_total else None, {})]))
        if self._gpu is None:
            return
        identity = {d.uuid: {names.HW_ID: d.uuid, names.HW_NAME: d.name, names.HW_VENDOR: "nvidia",
                             names.GPU_INDEX: d.index, names.GPU_DRIVER: self._gpu.driver,
                             **({names.HW_PARENT: d.parent} if d.parent else {})} for d in self._gpu.devices}

        def per_gpu(value: Callable[[GpuReading], Any],
                    extra: dict[str, Any] | None = None) -> Callable[[], Any]:
            return lambda: [(value(r), {**identity[r.uuid], **(extra or {})}) for r in self.gpus]

        gpu_type = {names.HW_TYPE: "gpu"}
        gauge(names.GPU_UTILIZATION, names.UNIT_RATIO,
              per_gpu(lambda r: r.utilization, {names.HW_GPU_TASK: "general"}))
        gauge(names.GPU_MEMORY_USAGE, names.UNIT_BYTES, per_gpu(lambda r: r.memory_used), "updown")
        gauge(names.GPU_MEMORY_LIMIT, names.UNIT_BYTES, per_gpu(lambda r: r.memory_total), "updown")
        gauge(names.GPU_MEMORY_UTILIZATION, names.UNIT_RATIO, per_gpu(
            lambda r: r.memory_used / r.memory_total
            if r.memory_used is not None and r.memory_total else None))
        gauge(names.HW_POWER, names.UNIT_WATTS, per_gpu(lambda r: r.power_w, gpu_type))
        gauge(names.HW_ENERGY, names.UNIT_JOULES, per_gpu(lambda r: r.energy_j, gpu_type), "counter")
        gauge(names.HW_TEMPERATURE, names.UNIT_CELSIUS, lambda: [
            (r.temperature_c, {names.HW_TYPE: "temperature", names.HW_PARENT: r.uuid,
                               names.HW_SENSOR_LOCATION: "gpu", names.HW_ID: f"{r.uuid}-temperature"})
            for r in self.gpus])
        gauge(names.GPU_CLOCK_GRAPHICS, names.UNIT_MHZ, per_gpu(lambda r: r.clock_graphics_mhz))
        gauge(names.GPU_CLOCK_MEMORY, names.UNIT_MHZ, per_gpu(lambda r: r.clock_memory_mhz))
        gauge(names.GPU_POWER_LIMIT, names.UNIT_WATTS, per_gpu(lambda r: r.power_limit_w))
        # a bitmask, not a ratio: no unit (unit "1" is named _ratio in Prometheus)
        gauge(names.GPU_THROTTLE_REASONS, "", per_gpu(lambda r: r.throttle_reasons))
        gauge(names.HW_ERRORS, "{error}", lambda: [
            (value, {**identity[r.uuid], **gpu_type, names.ERROR_TYPE: kind}) for r in self.gpus
            for kind, value in (("corrected", r.ecc_corrected), ("uncorrected", r.ecc_uncorrected))],
              "counter")
        gauge(names.GPU_IO, names.UNIT_BYTES, lambda: [
            (total, {**identity[uuid], names.NETWORK_IO_DIRECTION: direction})
            for (uuid, direction), total in list(self._pcie_bytes.items())], "counter")
        gauge(names.PROCESS_GPU_MEMORY, names.UNIT_BYTES, lambda: [
            (memory, {**identity[r.uuid], names.PROCESS_PID: pid}) for r in self.gpus
            for pid, memory in r.process_memory.items() if self.tree and pid in self.tree.pids])
