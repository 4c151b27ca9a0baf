"""A stand-in for the ``pynvml`` module (nvidia-ml-py) on machines without a GPU.

It doubles NVML at the function level only, and behaves like the real library: the real
``pynvml.NVMLError`` class and its subclasses (``NVMLError(code)`` maps to ``NVMLError_NotSupported``
etc.), the real constants, values in NVML's units (mW, mJ, percent, bytes, MHz), process entries
whose ``usedGpuMemory`` may be None, and MIG handles reached through their parent device.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pynvml as real


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    utilization: int = 50  # percent
    memory_used: int = 10 * 2**30  # bytes
    memory_total: int = 80 * 2**30
    power_mw: int = 300_000
    energy_mj: int = 1_000_000
    temperature: int = 60
    clocks: dict[int, int] = field(
        default_factory=lambda: {real.NVML_CLOCK_SM: 1980, real.NVML_CLOCK_MEM: 2619})
    power_limit_mw: int = 700_000
    throttle: int = 0
    ecc: tuple[int, int] = (3, 0)
    pcie_kbs: tuple[int, int] = (1000, 2000)  # tx, rx
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    mig: list[FakeGpu] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@dataclass
class _Utilization:
    gpu: int
    memory: int


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - NVML's own field name
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815


def build(gpus: list[FakeGpu], *, init_error: int | None = None,
          driver: str = "550.54.15") -> types.ModuleType:
    """A module object that can replace ``pynvml`` in ``sys.modules``."""
    module = types.ModuleType("pynvml")
    for name in dir(real):  # constants and the real error classes
        if name.startswith("NVML_") or name.startswith("NVMLError"):
            setattr(module, name, getattr(real, name))
    module.calls = []

    def fail_if(gpu: FakeGpu, function: str) -> None:
        module.calls.append(function)
        if function in gpu.errors:
            raise real.NVMLError(gpu.errors[function])

    def nvmlInit() -> None:  # noqa: N802 - NVML's names
        if init_error is not None:
            raise real.NVMLError(init_error)

    def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:  # noqa: N802
        if not 0 <= index < len(gpus):
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return gpus[index]

    def nvmlDeviceGetMigMode(gpu: FakeGpu) -> list[int]:  # noqa: N802
        fail_if(gpu, "nvmlDeviceGetMigMode")
        if not gpu.mig:
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return [real.NVML_DEVICE_MIG_ENABLE, real.NVML_DEVICE_MIG_ENABLE]

    def nvmlDeviceGetMigDeviceHandleByIndex(gpu: FakeGpu, slot: int) -> FakeGpu:  # noqa: N802
        if slot >= len(gpu.mig):
            raise real.NVMLError(real.NVML_ERROR_NOT_FOUND)
        return gpu.mig[slot]

    def reader(function: str, value: Any) -> Any:
        def read(gpu: FakeGpu, *args: Any) -> Any:
            fail_if(gpu, function)
            return value(gpu, *args)
        return read

    functions = {
        "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: driver,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetUUID": reader("nvmlDeviceGetUUID", lambda g: g.uuid),
        "nvmlDeviceGetName": reader("nvmlDeviceGetName", lambda g: g.name),
        "nvmlDeviceGetMaxMigDeviceCount": reader("nvmlDeviceGetMaxMigDeviceCount", lambda g: 7),
        "nvmlDeviceGetUtilizationRates": reader("nvmlDeviceGetUtilizationRates",
                                                lambda g: _Utilization(g.utilization, 10)),
        "nvmlDeviceGetMemoryInfo": reader("nvmlDeviceGetMemoryInfo", lambda g: _Memory(
            g.memory_total, g.memory_total - g.memory_used, g.memory_used)),
        "nvmlDeviceGetPowerUsage": reader("nvmlDeviceGetPowerUsage", lambda g: g.power_mw),
        "nvmlDeviceGetTotalEnergyConsumption": reader("nvmlDeviceGetTotalEnergyConsumption",
                                                      lambda g: g.energy_mj),
        "nvmlDeviceGetTemperature": reader("nvmlDeviceGetTemperature", lambda g, sensor: g.temperature),
        "nvmlDeviceGetClockInfo": reader("nvmlDeviceGetClockInfo", lambda g, kind: g.clocks[kind]),
        "nvmlDeviceGetEnforcedPowerLimit": reader("nvmlDeviceGetEnforcedPowerLimit",
                                                  lambda g: g.power_limit_mw),
        "nvmlDeviceGetCurrentClocksEventReasons": reader("nvmlDeviceGetCurrentClocksEventReasons",
                                                         lambda g: g.throttle),
        "nvmlDeviceGetTotalEccErrors": reader("nvmlDeviceGetTotalEccErrors",
                                              lambda g, kind, counter: g.ecc[kind]),
        "nvmlDeviceGetPcieThroughput": reader("nvmlDeviceGetPcieThroughput",
                                              lambda g, kind: g.pcie_kbs[kind]),
        "nvmlDeviceGetComputeRunningProcesses": reader("nvmlDeviceGetComputeRunningProcesses",
                                                       lambda g: [_Process(p, m) for p, m in g.processes]),
    }
    for name, function in functions.items():
        setattr(module, name, function)
    module.nvmlInit = nvmlInit
    module.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    module.nvmlDeviceGetMigMode = nvmlDeviceGetMigMode
    module.nvmlDeviceGetMigDeviceHandleByIndex = nvmlDeviceGetMigDeviceHandleByIndex
    return module
