"""The Prometheus names of the package's metrics and labels, made from the names module: what the rules
and dashboards query, never retyped.

Each name is built by :func:`prometheus_name`, the naming a run's /metrics and the Collector's path to
Prometheus share (``exporter.prometheus``): unit suffixes (``_seconds``, ``_bytes``), ``_ratio`` on a
dimensionless gauge, ``_total`` on a counter. A histogram's series add ``_bucket``, ``_sum``, ``_count``.
"""

from __future__ import annotations

from lezea_otel import semconv as names
from lezea_otel.exporter.delivery_metrics import UNITS as EXPORT_UNITS
from lezea_otel.exporter.instruments import COUNTERS, GAUGES, HISTOGRAMS, metric_name
from lezea_otel.exporter.prometheus import prometheus_label, prometheus_name


def gauge(name: str, unit: str = "") -> str:
    return prometheus_name(name, GAUGES[name][0] if name in GAUGES else unit)


def counter(name: str, unit: str = "") -> str:
    return prometheus_name(name, COUNTERS[name][0] if name in COUNTERS else unit, "counter")


def histogram(name: str) -> str:
    return prometheus_name(name, HISTOGRAMS[name][0], "histogram")


def training(key: str) -> str:
    """The gauge of training value ``key`` (``loss`` -> ``lezea_training_loss``)."""
    return prometheus_name(metric_name(key))


# --- labels ---------------------------------------------------------------------------------------
EXPERIMENT = prometheus_label(names.EXPERIMENT_ID)
EXPERIMENT_NAME = prometheus_label(names.EXPERIMENT_NAME)
RANK = prometheus_label(names.DL_RANK)
PHASE = prometheus_label(names.PHASE_NAME)
PHASE_KIND = prometheus_label(names.PHASE_KIND)
STATUS = prometheus_label(names.RUN_STATUS)
METRIC_KEY = prometheus_label(names.METRIC_KEY)
SCOPE = prometheus_label(names.SCOPE_PATH)
SPLIT = prometheus_label(names.DATA_SPLIT)
HW_ID = prometheus_label(names.HW_ID)
HW_TYPE = prometheus_label(names.HW_TYPE)
ERROR_TYPE = prometheus_label(names.ERROR_TYPE)
COST_KIND = prometheus_label(names.COST_KIND)
CPU_MODE = prometheus_label(names.CPU_MODE)
DISK_IO_DIRECTION = prometheus_label(names.DISK_IO_DIRECTION)
NETWORK_IO_DIRECTION = prometheus_label(names.NETWORK_IO_DIRECTION)
COMPONENT_ID = prometheus_label(names.COMPONENT_ID)
HOST_NAME = prometheus_label(names.HOST_NAME)
HW_NAME = prometheus_label(names.HW_NAME)
HW_PARENT = prometheus_label(names.HW_PARENT)
MEMORY_STATE = prometheus_label(names.MEMORY_STATE)
BY_RUN = f"{EXPERIMENT_NAME}, {EXPERIMENT}"
"""A run (its ranks together)."""
BY_RANK = f"{EXPERIMENT}, {EXPERIMENT_NAME}, {RANK}"
"""A run's rank (a single-process run has no dl_rank: it matches as the empty value)."""
ON_RANK = f"{EXPERIMENT}, {RANK}"

# --- the run and its training values --------------------------------------------------------------
STEP = gauge(names.TRAINING_STEP)
LAST_STEP_TIME = gauge(names.TRAINING_LAST_STEP_TIME)
RUN_START_TIME = gauge(names.RUN_START_TIME)
HEARTBEAT = prometheus_name(names.RUN_HEARTBEAT, names.UNIT_SECONDS)
RUN_STATE = prometheus_name(names.RUN_STATE)
NONFINITE = counter(names.TRAINING_NONFINITE)
TRAINING_PREFIX = prometheus_name(names.TRAINING_PREFIX.rstrip("."))
"""``lezea_training``: every training value's gauge starts with it and ``_``."""
LOSS = training("loss")
DELTA_LOSS = training("delta_loss")
PHASE_DURATION = histogram(names.PHASE_DURATION)
COST = prometheus_name(names.COST)
COST_LIMIT = gauge(names.COST_LIMIT)
COMPONENT_CPU = prometheus_name(names.COMPONENT_CPU, names.UNIT_RATIO)
COMPONENT_GPU = prometheus_name(names.COMPONENT_GPU, names.UNIT_RATIO)

# --- what the exporter's observers read -----------------------------------------------------------
PROCESS_CPU_TIME = prometheus_name(names.PROCESS_CPU_TIME, names.UNIT_SECONDS, "counter")
PROCESS_CPU_UTILIZATION = prometheus_name(names.PROCESS_CPU_UTILIZATION, names.UNIT_RATIO)
PROCESS_MEMORY = prometheus_name(names.PROCESS_MEMORY_USAGE, names.UNIT_BYTES)
PROCESS_DISK_IO = prometheus_name(names.PROCESS_DISK_IO, names.UNIT_BYTES, "counter")
PROCESS_THREADS = prometheus_name(names.PROCESS_THREAD_COUNT)
PROCESS_COUNT = prometheus_name(names.PROCESS_COUNT)
SYSTEM_CPU_UTILIZATION = prometheus_name(names.SYSTEM_CPU_UTILIZATION, names.UNIT_RATIO)
SYSTEM_MEMORY_UTILIZATION = prometheus_name(names.SYSTEM_MEMORY_UTILIZATION, names.UNIT_RATIO)
SYSTEM_MEMORY_USAGE = prometheus_name(names.SYSTEM_MEMORY_USAGE, names.UNIT_BYTES)
GPU_UTILIZATION = prometheus_name(names.GPU_UTILIZATION, names.UNIT_RATIO)
GPU_MEMORY_USAGE = prometheus_name(names.GPU_MEMORY_USAGE, names.UNIT_BYTES)
GPU_MEMORY_LIMIT = prometheus_name(names.GPU_MEMORY_LIMIT, names.UNIT_BYTES)
GPU_MEMORY_UTILIZATION = prometheus_name(names.GPU_MEMORY_UTILIZATION, names.UNIT_RATIO)
PROCESS_GPU_MEMORY = prometheus_name(names.PROCESS_GPU_MEMORY, names.UNIT_BYTES)
GPU_POWER = prometheus_name(names.HW_POWER, names.UNIT_WATTS)
GPU_POWER_LIMIT = prometheus_name(names.GPU_POWER_LIMIT, names.UNIT_WATTS)
GPU_TEMPERATURE = prometheus_name(names.HW_TEMPERATURE, names.UNIT_CELSIUS)
GPU_CLOCK_GRAPHICS = prometheus_name(names.GPU_CLOCK_GRAPHICS, names.UNIT_MHZ)
GPU_CLOCK_MEMORY = prometheus_name(names.GPU_CLOCK_MEMORY, names.UNIT_MHZ)
GPU_IO = prometheus_name(names.GPU_IO, names.UNIT_BYTES, "counter")
GPU_ENERGY = prometheus_name(names.HW_ENERGY, names.UNIT_JOULES, "counter")
GPU_THROTTLE_REASONS = prometheus_name(names.GPU_THROTTLE_REASONS)
HW_ERRORS = prometheus_name(names.HW_ERRORS, kind="counter")
ENDED = f"failed|terminated|{names.STATUS_ABANDONED}|finished"
"""The statuses of a run that ended by itself (``lezea.run.status``); a killed one never reports one."""

# --- the exporter's delivery of a run (exporter.delivery_metrics) ------------------------------------
EXPORT_ITEMS = prometheus_name(names.EXPORT_ITEMS, EXPORT_UNITS[names.EXPORT_ITEMS], "counter")
EXPORT_FAILURES = prometheus_name(names.EXPORT_FAILURES, EXPORT_UNITS[names.EXPORT_FAILURES], "counter")
EXPORT_LEFT = prometheus_name(names.EXPORT_LEFT, EXPORT_UNITS[names.EXPORT_LEFT])
EXPORT_LAG_RECORDS = prometheus_name(names.EXPORT_LAG_RECORDS, EXPORT_UNITS[names.EXPORT_LAG_RECORDS])
EXPORT_LAG_TIME = prometheus_name(names.EXPORT_LAG_TIME, EXPORT_UNITS[names.EXPORT_LAG_TIME])
EXPORT_DURATION = prometheus_name(names.EXPORT_DURATION, EXPORT_UNITS[names.EXPORT_DURATION], "histogram")
DESTINATION = prometheus_label(names.EXPORT_DESTINATION)
SIGNAL = prometheus_label(names.EXPORT_SIGNAL)
OUTCOME = prometheus_label(names.EXPORT_OUTCOME)
REFUSED_OUTCOMES = "dropped|rejected"
"""The outcomes of items a destination refused (``names.EXPORT_OUTCOMES``); the audit keeps them."""

# --- the Collector's own telemetry (not lezea_otel's names) ------------------------------------------
# Scraped from its /metrics (job otel-collector: collector/prometheus.yaml). Its counters have no _total:
# Prometheus 3 scrapes them in the protobuf format, which names them as the Collector does (checked on a
# real scrape by tests/test_stack_e2e.py). ``{}`` stands for the signal (COLLECTOR_SIGNALS).
COLLECTOR_SIGNALS = ("spans", "metric_points", "log_records")
COLLECTOR_ACCEPTED = "otelcol_receiver_accepted_{}"
COLLECTOR_REFUSED = "otelcol_receiver_refused_{}"
COLLECTOR_SENT = "otelcol_exporter_sent_{}"
COLLECTOR_SEND_FAILED = "otelcol_exporter_send_failed_{}"
COLLECTOR_ENQUEUE_FAILED = "otelcol_exporter_enqueue_failed_{}"
COLLECTOR_QUEUE_SIZE = "otelcol_exporter_queue_size"
COLLECTOR_QUEUE_CAPACITY = "otelcol_exporter_queue_capacity"
COLLECTOR_UPTIME = "otelcol_process_uptime"
COLLECTOR_MEMORY = "otelcol_process_memory_rss"
COLLECTOR_CPU = "otelcol_process_cpu_seconds"
