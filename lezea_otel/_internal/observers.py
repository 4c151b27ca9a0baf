"""Automatic observers: one sampler thread, observable instruments that read its latest snapshot,
per-scope resource windows, and run totals.

The sampler runs off the training thread every ``interval_s``; metric callbacks never call NVML or
psutil, they read the last snapshot. A scope window costs the training thread two cheap reads
(``time.process_time`` and, per GPU, the energy counter) plus whatever samples land inside it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from . import names
from .gpu_sampler import GpuReading, GpuSampler, torch_memory
from .process_sampler import ProcessSampler, TreeSample
from .safety import report_internal_error

Warn = Callable[[str, str, str], None]


@dataclass
class _Window:
    """What one open scope has seen of the samples taken while it ran."""

    process_time: float
    children_cpu: float
    energy: dict[str, float | None]
    rss_peak: int
    gpu_memory_peak: int = 0
    gpu_utilization: list[float] = field(default_factory=list)


class Observers:
    def __init__(self, meter: Meter, constant_attributes: dict[str, Any], interval_s: float, gpus: str,
                 warn: Warn, info: Callable[[str], None], pid: int | None = None) -> None:
        self._constant = constant_attributes
        self._interval = interval_s
        self._process = ProcessSampler(pid) if pid else ProcessSampler()
        self._gpu = GpuSampler.open(gpus, warn, info)
        self.tree: TreeSample | None = None
        self.gpus: list[GpuReading] = []
        self._torch: dict[str, dict[str, int]] = {}
        self._windows: dict[int, _Window] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pcie_bytes: dict[tuple[str, str], float] = {}
        self._first_energy: dict[str, float] = {}
        self._last_energy: dict[str, float] = {}
        self._busy_seconds: dict[str, float] = {}
        self._peaks = {"rss": 0, **{}}
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
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(1.0, self._interval))
        try:
            self.sample()
        finally:  # NVML is released even when the last sample fails
            if self._gpu is not None:
                self._gpu.close()

    def sample(self) -> None:
        tree = self._process.sample()
        gpus = self._gpu.sample() if self._gpu is not None else []
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
            self._peaks["rss"] = max(self._peaks["rss"], tree.rss_bytes)
            for window in self._windows.values():
                window.rss_peak = max(window.rss_peak, tree.rss_bytes)
                window.gpu_memory_peak = max(window.gpu_memory_peak,
                                             sum(self._tree_gpu_memory(r, tree) for r in gpus))
                window.gpu_utilization.extend(r.utilization for r in gpus if r.utilization is not None)
            self.tree, self.gpus, self._torch = tree, gpus, torch_memory()
            self.samples += 1
            self._last_sample_time = now

    @staticmethod
    def _tree_gpu_memory(reading: GpuReading, tree: TreeSample) -> int:
        return sum(m for pid, m in reading.process_memory.items() if pid in tree.pids and m is not None)

    # --- scopes -------------------------------------------------------------------------------

    def scope_enter(self) -> int:
        tree = self.tree
        window = _Window(time.process_time(), self._children_cpu(tree),
                         {d.uuid: self._gpu.energy(d) for d in self._gpu.devices} if self._gpu else {},
                         tree.rss_bytes if tree else 0)
        token = next(self._ids)
        with self._lock:
            self._windows[token] = window
        return token

    def scope_exit(self, token: int) -> dict[str, float]:
        with self._lock:
            window = self._windows.pop(token, None)
        if window is None:
            return {}
        cpu = time.process_time() - window.process_time + max(0.0, self._children_cpu(self.tree) - window.children_cpu)
        out = {names.SCOPE_CPU_SECONDS: cpu, names.SCOPE_MEMORY_PEAK: float(window.rss_peak)}
        if self._gpu is not None:
            energy = 0.0
            for device in self._gpu.devices:
                before, after = window.energy.get(device.uuid), self._gpu.energy(device)
                if before is not None and after is not None:
                    energy += after - before
            out[names.SCOPE_GPU_ENERGY] = energy
            out[names.SCOPE_GPU_MEMORY_PEAK] = float(window.gpu_memory_peak)
            samples = window.gpu_utilization or [r.utilization for r in self.gpus if r.utilization is not None]
            if samples:
                out[names.SCOPE_GPU_UTILIZATION_MEAN] = sum(samples) / len(samples)
        return out

    def _children_cpu(self, tree: TreeSample | None) -> float:
        """CPU seconds of the tree minus this process: children are seen at sample resolution."""
        if tree is None:
            return 0.0
        own = time.process_time()
        return max(0.0, tree.cpu_user_s + tree.cpu_system_s - own)

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
                "gpus": [{"hw.id": d.uuid, "name": d.name, "index": d.index} for d in self._gpu.devices]
                if self._gpu else [],
            }

    # --- instruments --------------------------------------------------------------------------

    def _register(self, meter: Meter) -> None:
        def gauge(name: str, unit: str, read: Callable[[], Iterable[tuple[float, dict[str, Any]]]],
                  kind: str = "gauge") -> None:
            def callback(_options: CallbackOptions) -> list[Observation]:
                return [Observation(v, {**self._constant, **a}) for v, a in read() if v is not None]
            create = {"gauge": meter.create_observable_gauge, "counter": meter.create_observable_counter,
                      "updown": meter.create_observable_up_down_counter}[kind]
            create(name, [callback], unit=unit)

        def tree(read: Callable[[TreeSample], Iterable[tuple[float | None, dict[str, Any]]]]) -> Callable[[], Any]:
            return lambda: list(read(self.tree)) if self.tree is not None else []

        gauge(names.PROCESS_CPU_TIME, names.UNIT_SECONDS, tree(lambda t: [
            (t.cpu_user_s, {names.CPU_MODE: "user"}), (t.cpu_system_s, {names.CPU_MODE: "system"})]), "counter")
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
              tree(lambda t: [(t.host_memory_used / t.host_memory_total if t.host_memory_total else None, {})]))
        if self._gpu is None:
            return
        identity = {d.uuid: {names.HW_ID: d.uuid, names.HW_NAME: d.name, names.HW_VENDOR: "nvidia",
                             names.GPU_INDEX: d.index, names.GPU_DRIVER: self._gpu.driver,
                             **({names.HW_PARENT: d.parent} if d.parent else {})} for d in self._gpu.devices}

        def per_gpu(value: Callable[[GpuReading], Any], extra: dict[str, Any] | None = None) -> Callable[[], Any]:
            return lambda: [(value(r), {**identity[r.uuid], **(extra or {})}) for r in self.gpus]

        gpu_type = {names.HW_TYPE: "gpu"}
        gauge(names.GPU_UTILIZATION, names.UNIT_RATIO, per_gpu(lambda r: r.utilization, {names.HW_GPU_TASK: "general"}))
        gauge(names.GPU_MEMORY_USAGE, names.UNIT_BYTES, per_gpu(lambda r: r.memory_used), "updown")
        gauge(names.GPU_MEMORY_LIMIT, names.UNIT_BYTES, per_gpu(lambda r: r.memory_total), "updown")
        gauge(names.GPU_MEMORY_UTILIZATION, names.UNIT_RATIO, per_gpu(
            lambda r: r.memory_used / r.memory_total if r.memory_used is not None and r.memory_total else None))
        gauge(names.HW_POWER, names.UNIT_WATTS, per_gpu(lambda r: r.power_w, gpu_type))
        gauge(names.HW_ENERGY, names.UNIT_JOULES, per_gpu(lambda r: r.energy_j, gpu_type), "counter")
        gauge(names.HW_TEMPERATURE, names.UNIT_CELSIUS, lambda: [
            (r.temperature_c, {names.HW_TYPE: "temperature", names.HW_PARENT: r.uuid,
                               names.HW_SENSOR_LOCATION: "gpu", names.HW_ID: f"{r.uuid}-temperature"})
            for r in self.gpus])
        gauge(names.GPU_CLOCK_GRAPHICS, names.UNIT_MHZ, per_gpu(lambda r: r.clock_graphics_mhz))
        gauge(names.GPU_CLOCK_MEMORY, names.UNIT_MHZ, per_gpu(lambda r: r.clock_memory_mhz))
        gauge(names.GPU_POWER_LIMIT, names.UNIT_WATTS, per_gpu(lambda r: r.power_limit_w))
        gauge(names.GPU_THROTTLE_REASONS, "1", per_gpu(lambda r: r.throttle_reasons))
        gauge(names.HW_ERRORS, "{error}", lambda: [
            (value, {**identity[r.uuid], **gpu_type, names.ERROR_TYPE: kind}) for r in self.gpus
            for kind, value in (("corrected", r.ecc_corrected), ("uncorrected", r.ecc_uncorrected))], "counter")
        gauge(names.GPU_IO, names.UNIT_BYTES, lambda: [
            (total, {**identity[uuid], names.NETWORK_IO_DIRECTION: direction})
            for (uuid, direction), total in list(self._pcie_bytes.items())], "counter")
        gauge(names.PROCESS_GPU_MEMORY, names.UNIT_BYTES, lambda: [
            (memory, {**identity[r.uuid], "process.pid": pid}) for r in self.gpus
            for pid, memory in r.process_memory.items() if self.tree and pid in self.tree.pids])
        for name, key in ((names.TORCH_ALLOCATED, "allocated"), (names.TORCH_RESERVED, "reserved"),
                          (names.TORCH_PEAK, "peak")):
            gauge(name, names.UNIT_BYTES, lambda key=key: [
                (stats[key], {names.TORCH_DEVICE: device}) for device, stats in self._torch.items()], "updown")
