"""lezea / Resources: what the chosen runs cost the machine they run on, and whether the hardware held up.

Three rows: the training process and its children (CPU, RSS, disk I/O, threads, and the components'
own figures from ``log_component_resources``), the host (CPU and memory), and each GPU as NVML reads it
under the ``hw.*`` semantic conventions (utilization, memory, power, temperature, clocks, PCIe, ECC
errors, energy, throttle reasons). Every query is filtered by the Run variable; each series is named by
the experiment and, for GPUs, the device.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard, timeseries

from lezea_otel.mixin.dashboards.common import RUNS, board, graph, legend, promql, run_variables, single
from lezea_otel.mixin.promql import (
    BY_RUN,
    COMPONENT_CPU,
    COMPONENT_GPU,
    COMPONENT_ID,
    CPU_MODE,
    DISK_IO_DIRECTION,
    ERROR_TYPE,
    EXPERIMENT_NAME,
    GPU_CLOCK_GRAPHICS,
    GPU_CLOCK_MEMORY,
    GPU_ENERGY,
    GPU_IO,
    GPU_MEMORY_LIMIT,
    GPU_MEMORY_USAGE,
    GPU_MEMORY_UTILIZATION,
    GPU_POWER,
    GPU_POWER_LIMIT,
    GPU_TEMPERATURE,
    GPU_THROTTLE_REASONS,
    GPU_UTILIZATION,
    HOST_NAME,
    HW_ERRORS,
    HW_ID,
    HW_NAME,
    HW_PARENT,
    HW_TYPE,
    MEMORY_STATE,
    NETWORK_IO_DIRECTION,
    PROCESS_COUNT,
    PROCESS_CPU_TIME,
    PROCESS_CPU_UTILIZATION,
    PROCESS_DISK_IO,
    PROCESS_GPU_MEMORY,
    PROCESS_MEMORY,
    PROCESS_THREADS,
    SYSTEM_CPU_UTILIZATION,
    SYSTEM_MEMORY_USAGE,
    SYSTEM_MEMORY_UTILIZATION,
)

GPUS = f'{HW_TYPE}="gpu"'
"""The ``hw.*`` series of GPUs (``hw.power`` and ``hw.energy`` are shared with other hardware types)."""


RUN = legend(EXPERIMENT_NAME)
GPU = legend(EXPERIMENT_NAME, HW_NAME, HW_ID)


def _of_runs(metric: str, *matchers: str) -> str:
    """The series of ``metric`` of the chosen runs (and ``matchers``)."""
    return f"{metric}{{{', '.join((RUNS, *matchers))}}}"


def _sum(function: str, metric: str, *by: str, window: str = "$__rate_interval", where: str = "") -> str:
    """``function`` (rate, increase) of a counter over ``window``, per run and the ``by`` labels;
    ``where``: one more matcher."""
    series = _of_runs(metric, where) if where else _of_runs(metric)
    return f"sum by ({', '.join((BY_RUN, *by))}) ({function}({series}[{window}]))"


def _graph(title: str, description: str, unit: str, *queries: tuple[str, str]) -> timeseries.Panel:
    """A third of a row: one line per series of each (PromQL, legend), refIds A, B, ..."""
    return graph(title, description, [promql(expr, legend, chr(ord("A") + n))
                                      for n, (expr, legend) in enumerate(queries)], unit=unit, width=8)


def build() -> dict[str, Any]:
    items = [
        dashboard.Row("Process (trainer and its children)"),
        _graph("Process CPU (cores)", "CPU seconds per second of the training process tree, user and system.",
               "none", (_sum("rate", PROCESS_CPU_TIME, CPU_MODE), legend(EXPERIMENT_NAME, CPU_MODE))),
        _graph("Process CPU utilization",
               "CPU use of the training process tree as a share of the CPUs available to it.", "percentunit",
               (_of_runs(PROCESS_CPU_UTILIZATION), RUN)),
        _graph("Process memory (RSS)", "Resident memory of the training process and its children, summed.",
               "bytes", (_of_runs(PROCESS_MEMORY), RUN)),
        _graph("Process disk I/O", "Bytes per second the process tree reads from and writes to disk.", "Bps",
               (_sum("rate", PROCESS_DISK_IO, DISK_IO_DIRECTION),
                legend(EXPERIMENT_NAME, DISK_IO_DIRECTION))),
        _graph("Threads and processes", "Threads and processes in the training process tree.", "none",
               (_of_runs(PROCESS_THREADS), f"{RUN} threads"), (_of_runs(PROCESS_COUNT), f"{RUN} processes")),
        _graph("Component CPU / GPU (log_component_resources)",
               "CPU and GPU use each component reported with tracker.log_component_resources.", "percentunit",
               (_of_runs(COMPONENT_CPU), f"{legend(COMPONENT_ID)} cpu"),
               (_of_runs(COMPONENT_GPU), f"{legend(COMPONENT_ID)} gpu")),
        dashboard.Row("System"),
        _graph("System CPU utilization", "Busy share of all CPUs of the host each run is on.", "percentunit",
               (_of_runs(SYSTEM_CPU_UTILIZATION), legend(EXPERIMENT_NAME, HOST_NAME))),
        _graph("System memory utilization", "Share of the host's memory in use.", "percentunit",
               (_of_runs(SYSTEM_MEMORY_UTILIZATION), legend(EXPERIMENT_NAME, HOST_NAME))),
        _graph("System memory used", "Memory in use on the host, in bytes.", "bytes",
               (_of_runs(SYSTEM_MEMORY_USAGE), legend(EXPERIMENT_NAME, MEMORY_STATE))),
        dashboard.Row("GPU (NVML, hw.* semantic conventions)"),
        _graph("GPU utilization", "Share of time each GPU was running a kernel (NVML).", "percentunit",
               (_of_runs(GPU_UTILIZATION), GPU)),
        _graph("GPU memory used", "Memory in use on each GPU, by any process, against its total.", "bytes",
               (_of_runs(GPU_MEMORY_USAGE), f"{GPU} used"), (_of_runs(GPU_MEMORY_LIMIT), f"{GPU} limit")),
        _graph("GPU memory utilization", "Share of each GPU's memory in use, by any process.", "percentunit",
               (_of_runs(GPU_MEMORY_UTILIZATION), GPU)),
        _graph("GPU memory of this run's processes",
               "GPU memory held by the processes of the run's process tree, per GPU.", "bytes",
               (_of_runs(PROCESS_GPU_MEMORY), GPU)),
        _graph("GPU power", "Power draw of each GPU against its power limit.", "watt",
               (_of_runs(GPU_POWER, GPUS), GPU), (_of_runs(GPU_POWER_LIMIT), f"{GPU} limit")),
        _graph("GPU temperature", "Temperature of each GPU's sensor, named by the GPU it sits on.", "celsius",
               (_of_runs(GPU_TEMPERATURE), legend(EXPERIMENT_NAME, HW_PARENT))),
        _graph("GPU clocks", "Graphics and memory clocks of each GPU (NVML), in MHz.", "rotmhz",
               (_of_runs(GPU_CLOCK_GRAPHICS), f"{GPU} graphics"),
               (_of_runs(GPU_CLOCK_MEMORY), f"{GPU} memory")),
        _graph("GPU PCIe throughput", "Bytes per second over each GPU's PCIe link, each direction.", "Bps",
               (_sum("rate", GPU_IO, HW_ID, NETWORK_IO_DIRECTION),
                legend(EXPERIMENT_NAME, HW_ID, NETWORK_IO_DIRECTION))),
        _graph("GPU ECC errors", "New corrected and uncorrected ECC errors of each GPU per interval.", "none",
               (_sum("increase", HW_ERRORS, HW_ID, ERROR_TYPE), legend(EXPERIMENT_NAME, HW_ID, ERROR_TYPE))),
        single("GPU energy in range", "Energy the run's GPUs used in the time range.",
               promql(_sum("increase", GPU_ENERGY, window="$__range", where=GPUS), RUN, instant=True),
               unit="joule", width=8, height=5),
        single("GPU throttle reasons (NVML bitmask)",
               "The latest NVML clock throttle reasons of each GPU, as the bitmask NVML reports (0: none).",
               promql(f"max by ({BY_RUN}, {HW_ID}) ({_of_runs(GPU_THROTTLE_REASONS)})", legend(HW_ID),
                      instant=True),
               width=8, height=5),
    ]
    return board("lezea-resources", "lezea / Resources",
                 "Process, system and GPU resources of lezea_otel runs.", run_variables(), items,
                 since="now-6h")  # runs last hours: an hour shows too little
