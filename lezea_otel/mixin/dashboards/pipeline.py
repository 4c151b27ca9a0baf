"""lezea / Pipeline health: is the telemetry getting through? First each run's exporter (its delivery report
as metrics, ``exporter.delivery_metrics``): what it delivered and what was refused per destination and
signal, what is left to deliver, how far behind the audit it is, how long its requests take. Then the
Collector's own telemetry, per signal: what its receivers accepted and refused, what its exporters sent,
failed to send after every retry and found no room for in their queues, how full those queues are, and the
Collector's own memory and CPU.

The Collector's metrics are scraped from its /metrics (job ``otel-collector``, ``collector/prometheus.yaml``),
named as it names them (its counters have no ``_total``: Prometheus 3 scrapes them in the protobuf format).
A failure counter exists only from its first failure on: each failure panel adds a zero line per exporter
that sends, so "no failures" reads as 0, not as "No data". The alerts ``LezeaCollector*``
(``collector/rules/``) fire on the same counters.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard

from lezea_otel.mixin.dashboards.common import (
    RUNS,
    board,
    graph,
    legend,
    promql,
    query_variable,
    run_variables,
)
from lezea_otel.mixin.promql import (
    COLLECTOR_ACCEPTED,
    COLLECTOR_CPU,
    COLLECTOR_ENQUEUE_FAILED,
    COLLECTOR_MEMORY,
    COLLECTOR_QUEUE_CAPACITY,
    COLLECTOR_QUEUE_SIZE,
    COLLECTOR_REFUSED,
    COLLECTOR_SEND_FAILED,
    COLLECTOR_SENT,
    COLLECTOR_SIGNALS,
    COLLECTOR_UPTIME,
    DESTINATION,
    EXPERIMENT_NAME,
    EXPORT_DURATION,
    EXPORT_FAILURES,
    EXPORT_ITEMS,
    EXPORT_LAG_RECORDS,
    EXPORT_LAG_TIME,
    EXPORT_LEFT,
    OUTCOME,
    RANK,
    REFUSED_OUTCOMES,
    SIGNAL,
)

INSTANCES = 'instance=~"$collector"'
SIGNAL_NAMES = {"spans": "spans", "metric_points": "metric points", "log_records": "log records"}


def _per_second(counter: str, by: str, zero_from: str | None = None) -> list[Any]:
    """One query per signal: ``counter`` per second summed ``by`` the labels given; with ``zero_from``, a
    zero line for each series of that counter too (a failure counter is made at its first failure)."""
    queries = []
    for ref, signal in zip("ABC", COLLECTOR_SIGNALS, strict=True):
        def rate(name: str, of: str = signal) -> str:
            return f"sum by ({by}) (rate({name.format(of)}{{{INSTANCES}}}[$__rate_interval]))"

        expr = rate(counter) if zero_from is None else f"{rate(counter)} or 0 * {rate(zero_from)}"
        queries.append(promql(expr, f"{legend(*by.split(', '))} {SIGNAL_NAMES[signal]}", ref))
    return queries


RUN = f"{EXPERIMENT_NAME}, {RANK}"
"""A run's series are summed per experiment name and rank; the legend names both (and a rank, if any)."""


def _exporters() -> list[Any]:
    """The runs' exporters: their delivery report, live."""
    by = f"{RUN}, {DESTINATION}"

    def who(*more: str) -> str:
        return legend(EXPERIMENT_NAME, RANK, DESTINATION, *more)

    def items(outcome: str) -> str:
        return (f'sum by ({by}, {SIGNAL}) (rate({EXPORT_ITEMS}{{{RUNS}, {OUTCOME}=~"{outcome}"}}'
                f"[$__rate_interval]))")

    latency = (f"histogram_quantile(0.95, sum by (le, {by}, {SIGNAL}) "
               f"(rate({EXPORT_DURATION}_bucket{{{RUNS}}}[$__rate_interval])))")
    return [
        dashboard.Row("Runs' exporters"),
        graph("Delivered per second", "Spans, metric batches and log records each run's exporter delivered, "
              "per destination (otlp: the collector; local: the run's files and /metrics).",
              [promql(items("exported"), who(SIGNAL))], unit="short"),
        graph("Refused per second", "Items a destination refused for good: dropped by a file that could not "
              "be written, or rejected by the collector (LezeaTelemetryRefused); the audit keeps them.",
              [promql(items(REFUSED_OUTCOMES), who(SIGNAL))], unit="short"),
        graph("Behind the audit (time)", "The newest record the trainer wrote minus the newest each "
              "destination took, in the trainer's time (LezeaExporterBehind).",
              [promql(f"max by ({by}) ({EXPORT_LAG_TIME}{{{RUNS}}})", who())], unit="s"),
        graph("Behind the audit (records)", "Audit records written that each destination has not taken yet.",
              [promql(f"sum by ({by}) ({EXPORT_LAG_RECORDS}{{{RUNS}}})", who())], unit="short"),
        graph("Left to deliver", "Spans and log records produced and not taken: held for a retry, or left in "
              "the audit for lezea-otel export once the exporter gave up.",
              [promql(f"sum by ({by}, {SIGNAL}) ({EXPORT_LEFT}{{{RUNS}}})", who(SIGNAL))], unit="short"),
        graph("Failed requests per second", "Export requests a destination did not take; a held batch is "
              "retried with backoff, each retry counted.",
              [promql(f"sum by ({by}, {SIGNAL}) (rate({EXPORT_FAILURES}{{{RUNS}}}[$__rate_interval]))",
                      who(SIGNAL))], unit="short"),
        graph("Request latency p95", "How long one export request takes, taken or not: a collector slowing "
              "down shows here before anything is refused.",
              [promql(latency, who(SIGNAL))], unit="s"),
    ]


def build() -> dict[str, Any]:
    collector = query_variable("collector", "Collector", f"label_values({COLLECTOR_UPTIME}, instance)")
    receivers, exporters = "instance, receiver", "instance, exporter"
    queue = (f"max by (instance, exporter, data_type) ({COLLECTOR_QUEUE_SIZE}{{{INSTANCES}}} / "
             f"{COLLECTOR_QUEUE_CAPACITY}{{{INSTANCES}}})")
    items = [
        *_exporters(),
        dashboard.Row("Collector receivers"),
        graph("Accepted per second", "Spans, metric points and log records the collector's receivers took.",
              _per_second(COLLECTOR_ACCEPTED, receivers), unit="short"),
        graph("Refused per second", "Items its receivers refused (memory_limiter): the senders retry; a "
              "run's exporter keeps them in its audit meanwhile.",
              _per_second(COLLECTOR_REFUSED, receivers, COLLECTOR_ACCEPTED), unit="short"),
        dashboard.Row("Collector exporters"),
        graph("Sent per second", "Items each exporter delivered to its backend (Prometheus, Tempo, Loki, or "
              "the gateways).", _per_second(COLLECTOR_SENT, exporters), unit="short"),
        graph("Failed for good per second", "Items an exporter dropped after the collector took them: "
              "refused for good by the backend (400) or failed after every retry "
              "(LezeaCollectorDroppingData).",
              _per_second(COLLECTOR_SEND_FAILED, exporters, COLLECTOR_SENT), unit="short"),
        graph("Refused by a full queue per second", "Items an exporter's sending queue had no room for "
              "(LezeaCollectorQueueFull); the senders retry.",
              _per_second(COLLECTOR_ENQUEUE_FAILED, exporters, COLLECTOR_SENT), unit="short"),
        graph("Queue fill", "Each exporter's sending queue: its size over its capacity "
              "(LezeaCollectorQueueNearCapacity above 80%).",
              [promql(queue, legend("instance", "exporter"))], unit="percentunit"),
        dashboard.Row("The collector"),
        graph("Memory (RSS)", "The collector process's resident memory: memory_limiter refuses data above "
              "OTELCOL_MEMORY_LIMIT_MIB.", [promql(f"{COLLECTOR_MEMORY}{{{INSTANCES}}}", legend("instance"))],
              unit="bytes"),
        graph("CPU", "CPU seconds per second the collector process used.",
              [promql(f"rate({COLLECTOR_CPU}{{{INSTANCES}}}[$__rate_interval])", legend("instance"))],
              unit="percentunit"),
    ]
    return board("lezea-pipeline", "lezea / Pipeline health",
                 "Is telemetry getting through? Each run's exporter, then the collector's receivers, "
                 "exporters, queues and process.", [*run_variables(), collector], items)
