"""GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``), in OTel units.

Devices are identified by UUID (``hw.id``), the id DCGM uses too. Every field is read on its own:
a field the device does not support, or may not be read, is simply absent (one warning); a
device that is lost is dropped (one warning); everything else goes on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Warn = Callable[[str, str, str], None]


@dataclass
class Device:
    handle: Any
    index: int
    uuid: str
    name: str
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False
    parent: str | None = None
    """For a MIG instance: the UUID of its GPU (``hw.parent``)."""


@dataclass
class GpuReading:
    """One device at one sample; None means the value is not available."""

    uuid: str
    utilization: float | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    power_w: float | None = None
    energy_j: float | None = None
    temperature_c: float | None = None
    clock_graphics_mhz: float | None = None
    clock_memory_mhz: float | None = None
    power_limit_w: float | None = None
    throttle_reasons: int | None = None
    ecc_corrected: int | None = None
    ecc_uncorrected: int | None = None
    pcie_tx_kbs: float | None = None
    pcie_rx_kbs: float | None = None
    process_memory: dict[int, int | None] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def select(visible: str | None, wanted: str, devices: list[Device]) -> list[Device]:
    """The run's GPUs: ``job`` honours CUDA_VISIBLE_DEVICES (indexes, GPU-/MIG- UUIDs), ``all``, or UUIDs."""
    if wanted == "all":
        return devices
    if wanted != "job":
        uuids = [u.strip() for u in wanted.split(",") if u.strip()]
        return [d for d in devices if any(d.uuid.startswith(u) for u in uuids)]
    if visible is None:
        return devices
    chosen: list[Device] = []
    for token in (t.strip() for t in visible.split(",")):
        if not token or token == "-1":
            break  # CUDA stops at the first invalid entry
        if token.isdigit():  # an index names the physical GPU, never its MIG instances
            match = [d for d in devices if d.index == int(token) and d.parent is None]
        else:
            match = [d for d in devices if d.uuid.startswith(token) or d.uuid.startswith(f"GPU-{token}")]
        if not match:
            break
        chosen.extend(m for m in match if m not in chosen)
    return chosen


class GpuSampler:
    """Discovers devices once; ``sample()`` reads them. Construct with ``open()``, which may return None."""

    def __init__(self, nvml: Any, devices: list[Device], driver: str, warn: Warn) -> None:
        self.nvml = nvml
        self.devices = devices
        self.driver = driver
        self._warn = warn

    @classmethod
    def open(cls, wanted: str, warn: Warn, info: Callable[[str], None]) -> GpuSampler | None:
        try:
            import pynvml as nvml  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            info("nvidia-ml-py is not installed: no GPU metrics")
            return None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            info(f"NVML is not available ({type(error).__name__}): no GPU metrics")
            return None
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
            devices = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                devices.append(Device(handle, index, _text(nvml.nvmlDeviceGetUUID(handle)),
                                      _text(nvml.nvmlDeviceGetName(handle))))
                devices.extend(cls._mig_devices(nvml, handle, index, devices[-1].uuid))
        except nvml.NVMLError as error:
            info(f"NVML could not list devices ({type(error).__name__}): no GPU metrics")
            return None
        chosen = select(os.environ.get("CUDA_VISIBLE_DEVICES"), wanted, devices)
        if not chosen:
            info("no GPU visible to this run (CUDA_VISIBLE_DEVICES / LEZEA_GPUS): no GPU metrics")
            return None
        return cls(nvml, chosen, driver, warn)

    @staticmethod
    def _mig_devices(nvml: Any, parent: Any, index: int, parent_uuid: str) -> list[Device]:
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(parent)
        except nvml.NVMLError:
            return []
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        found = []
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(parent)):
            try:
                handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot)
            except nvml.NVMLError:  # NotFound: an empty slot
                continue
            found.append(Device(handle, index, _text(nvml.nvmlDeviceGetUUID(handle)),
                                _text(nvml.nvmlDeviceGetName(handle)), parent=parent_uuid))
        return found

    def _read(self, device: Device, field_name: str, read: Callable[[], Any]) -> Any:
        if field_name in device.unsupported or device.lost:
            return None
        nvml = self.nvml
        try:
            return read()
        except nvml.NVMLError_GpuIsLost:
            device.lost = True
            self._warn("observers", f"GPU {device.uuid} is lost", "its metrics stop; the other devices go on")
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_NoPermission) as error:
            device.unsupported.add(field_name)
            self._warn("observers", f"GPU {device.uuid}: {field_name} unavailable ({type(error).__name__})",
                       "that value is left out")
        except nvml.NVMLError as error:
            self._warn("observers",
                       f"GPU {device.uuid}: reading {field_name} failed ({type(error).__name__})",
                       "skipped this sample")
        except AttributeError:  # an older nvidia-ml-py without this function
            device.unsupported.add(field_name)
        return None

    def energy(self, device: Device) -> float | None:
        """Total energy in J since the driver loaded: read at scope enter and exit."""
        value = self._read(device, "energy",
                           lambda: self.nvml.nvmlDeviceGetTotalEnergyConsumption(device.handle))
        return value / 1000.0 if value is not None else None

    def sample(self) -> list[GpuReading]:
        readings = []
        for device in self.devices:
            if device.lost:
                continue
            reading = self._sample_device(device)
            if not device.lost:
                readings.append(reading)
        return readings

    def _sample_device(self, device: Device) -> GpuReading:
        nvml, h = self.nvml, device.handle
        reading = GpuReading(device.uuid)
        rates = self._read(device, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        reading.utilization = rates.gpu / 100.0 if rates is not None else None
        memory = self._read(device, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        if memory is not None:
            reading.memory_used, reading.memory_total = int(memory.used), int(memory.total)
        power = self._read(device, "power", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        reading.power_w = power / 1000.0 if power is not None else None
        reading.energy_j = self.energy(device)
        reading.temperature_c = self._read(
            device, "temperature", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        reading.clock_graphics_mhz = self._read(
            device, "clock_graphics", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))
        reading.clock_memory_mhz = self._read(
            device, "clock_memory", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM))
        limit = self._read(device, "power_limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h))
        reading.power_limit_w = limit / 1000.0 if limit is not None else None
        reading.throttle_reasons = self._read(
            device, "throttle_reasons", lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(h))
        reading.ecc_corrected = self._read(device, "ecc", lambda: nvml.nvmlDeviceGetTotalEccErrors(
            h, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC))
        reading.ecc_uncorrected = self._read(device, "ecc", lambda: nvml.nvmlDeviceGetTotalEccErrors(
            h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC))
        reading.pcie_tx_kbs = self._read(
            device, "pcie", lambda: nvml.nvmlDeviceGetPcieThroughput(h, nvml.NVML_PCIE_UTIL_TX_BYTES))
        reading.pcie_rx_kbs = self._read(
            device, "pcie", lambda: nvml.nvmlDeviceGetPcieThroughput(h, nvml.NVML_PCIE_UTIL_RX_BYTES))
        processes = self._read(device, "processes", lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h))
        for process in processes or []:
            reading.process_memory[int(process.pid)] = process.usedGpuMemory
            if process.usedGpuMemory is None:
                self._warn("observers",
                           f"GPU {device.uuid}: per-process memory unavailable (usedGpuMemory is None)",
                           "process GPU memory is left out; device memory is still reported")
        return reading

    def close(self) -> None:
        with contextlib.suppress(Exception):  # NVML gone already: nothing left to release
            self.nvml.nvmlShutdown()
