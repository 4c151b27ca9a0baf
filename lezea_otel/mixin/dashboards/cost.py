"""lezea / Cost: what the chosen runs cost and what they used. Per run: the total cost in EUR and each kind
``log_resource_cost`` reported (CPU and GPU hours, memory, I/O, EUR), against the cost limit when one is set
(``LEZEA_COST_LIMIT_EUR``), and per 1,000 training steps; the CPU hours the exporter observed beside those
reported; and the energy the GPUs drew, per GPU and per run.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as model

from lezea_otel.mixin.dashboards.common import RUNS, board, graph, legend, promql, run_variables, single
from lezea_otel.mixin.promql import (
    COST,
    COST_KIND,
    COST_LIMIT,
    EXPERIMENT,
    EXPERIMENT_NAME,
    GPU_ENERGY,
    HW_ID,
    HW_TYPE,
    PROCESS_CPU_TIME,
    STEP,
)

RUN = f"{EXPERIMENT}, {EXPERIMENT_NAME}"
"""A run (experiment id) and its experiment's name: what the queries keep of a series."""
JOULES_PER_KWH = 3_600_000
SECONDS_PER_HOUR = 3600
KIND_UNITS = {"cost_eur": "currencyEUR", "cpu_hours": "h", "gpu_hours": "h", "mem_gb": "decgbytes",
              "io_bytes": "bytes"}
"""The kinds ``log_resource_cost`` takes (``lezea_cost_kind``) and the Grafana unit of each."""


def _reported(kind: str = "") -> str:
    """The running total of ``kind`` (every kind when empty) per run: the sum over its ranks' last values.
    ``lezea_cost`` is a gauge per process, and a pushed gauge only has a sample when it changes: read with
    ``last_over_time(...[$__range])``, as the LezeaCostOverLimit alert does."""
    kinds = f', {COST_KIND}="{kind}"' if kind else ""
    by = f"{RUN}, {COST_KIND}" if not kind else RUN
    return f"sum by ({by}) (last_over_time({COST}{{{RUNS}{kinds}}}[$__range]))"


LIMIT = f"max by ({RUN}) (last_over_time({COST_LIMIT}{{{RUNS}}}[$__range]))"
"""The run's cost limit in EUR (each rank reports the same one)."""
STEPS = f"max by ({EXPERIMENT}) (last_over_time({STEP}{{{RUNS}}}[$__range]))"
"""The run's training step: its furthest rank's."""
GPUS = f'{GPU_ENERGY}{{{RUNS}, {HW_TYPE}="gpu"}}'
GPU_ENERGY_IN_RANGE = f"max by ({RUN}, {HW_ID}) (increase({GPUS}[$__range]))"
"""The energy each GPU drew in the time range (joules), once per run however many ranks read it."""


def build() -> dict[str, Any]:
    cost_eur = _reported("cost_eur")
    cost_by_kind = graph(
        "Cost by kind", "The running total of each kind log_resource_cost reported, per run (summed over "
        "ranks), each in its own unit.",
        [promql(_reported(), legend(EXPERIMENT_NAME, COST_KIND))], width=12, height=8)
    for kind, unit in KIND_UNITS.items():
        cost_by_kind = cost_by_kind.override_by_regexp(f".* {kind}", [model.DynamicConfigValue("unit", unit)])
    against_limit = graph(
        "Cost against its limit", "The run's cost_eur total (summed over ranks) and, dashed, its limit "
        "(LEZEA_COST_LIMIT_EUR) when one is set; LezeaCostOverLimit fires when the first crosses the second.",
        [promql(cost_eur, legend(EXPERIMENT_NAME)),
         promql(LIMIT, legend(EXPERIMENT_NAME) + " limit", ref="B")],
        unit="currencyEUR", width=12, height=8).override_by_query("B", [
            model.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
            model.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"})])
    items: list[Any] = [
        dashboard.Row("Cost"),
        single("Cost (EUR)", "The run's cost_eur total as log_resource_cost last reported it in the "
               "time range, summed over its ranks.", promql(cost_eur, legend(EXPERIMENT_NAME), instant=True),
               unit="currencyEUR", width=8),
        single("Cost limit (EUR)", "The run's cost limit (LEZEA_COST_LIMIT_EUR); no value when none is set.",
               promql(LIMIT, legend(EXPERIMENT_NAME), instant=True),
               unit="currencyEUR", width=8).no_value("no limit"),
        single("Cost per 1,000 steps (EUR)", "1,000 times the run's cost_eur total over its training "
               "step (the furthest rank's); no value before step 1.",
               promql(f"1000 * {cost_eur}\n/ on ({EXPERIMENT}) group_left () ({STEPS} > 0)",
                      legend(EXPERIMENT_NAME), instant=True),
               unit="currencyEUR", width=8),
        against_limit,
        cost_by_kind,
        dashboard.Row("Compute time"),
        single("CPU hours", "The run's cpu_hours total as log_resource_cost reported it, summed over its "
               "ranks.", promql(_reported("cpu_hours"), legend(EXPERIMENT_NAME), instant=True),
               unit="h", width=8),
        single("GPU hours", "The run's gpu_hours total as log_resource_cost reported it, summed over its "
               "ranks.", promql(_reported("gpu_hours"), legend(EXPERIMENT_NAME), instant=True),
               unit="h", width=8),
        single("CPU hours observed", "CPU time (user and system) the exporter observed of the run's "
               "processes in the time range, summed over ranks, in hours.",
               promql(f"sum by ({RUN}) (increase({PROCESS_CPU_TIME}{{{RUNS}}}[$__range])) / "
                      f"{SECONDS_PER_HOUR}", legend(EXPERIMENT_NAME), instant=True),
               unit="h", width=8),
        dashboard.Row("Energy"),
        graph("GPU energy per GPU", "The energy each of the run's GPUs has drawn since the start of the "
              "time range (or since its first reading in it), in kWh (hw.energy, NVML).",
              [promql(f"max by ({RUN}, {HW_ID}) ({GPUS} - min_over_time({GPUS}[$__range] @ end())) / "
                      f"{JOULES_PER_KWH}", legend(EXPERIMENT_NAME, HW_ID))],
              unit="kwatth", width=18, height=8),
        single("Energy per run (kWh)", "The energy the run's GPUs drew in the time range, each GPU counted "
               "once, in kWh.",
               promql(f"sum by ({RUN}) ({GPU_ENERGY_IN_RANGE}) / {JOULES_PER_KWH}", legend(EXPERIMENT_NAME),
                      instant=True),
               unit="kwatth", width=6, height=8),
    ]
    return board("lezea-cost", "lezea / Cost",
                 "What lezea_otel runs cost (log_resource_cost, per kind and in total, against the cost "
                 "limit, per 1,000 steps), their CPU and GPU hours, and the energy their GPUs drew.",
                 run_variables(), items)
