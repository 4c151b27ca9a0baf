"""lezea / Pipeline health: is the telemetry getting through? The Collector's own telemetry, per signal:
what its receivers accepted and refused, what its exporters sent, failed to send after every retry and
found no room for in their queues, how full those queues are, and the Collector's own memory and CPU.

The Collector's metrics are scraped from its /metrics (job ``otel-collector``, ``collector/prometheus.yaml``),
named as it names them (its counters have no ``_total``: Prometheus 3 scrapes them in the protobuf format).
A failure counter exists only from its first failure on: each failure panel adds a zero line per exporter
that sends, so "no failures" reads as 0, not as "No data". The alerts ``LezeaCollector*``
(``collector/rules/``) fire on the same counters.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard

from lezea_otel.mixin.dashboards.common import board, graph, legend, promql, query_variable
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


def build() -> dict[str, Any]:
    collector = query_variable("collector", "Collector", f"label_values({COLLECTOR_UPTIME}, instance)")
    receivers, exporters = "instance, receiver", "instance, exporter"
    queue = (f"max by (instance, exporter, data_type) ({COLLECTOR_QUEUE_SIZE}{{{INSTANCES}}} / "
             f"{COLLECTOR_QUEUE_CAPACITY}{{{INSTANCES}}})")
    items = [
        dashboard.Row("Receivers"),
        graph("Accepted per second", "Spans, metric points and log records the collector's receivers took.",
              _per_second(COLLECTOR_ACCEPTED, receivers), unit="short"),
        graph("Refused per second", "Items its receivers refused (memory_limiter): the senders retry; a "
              "run's exporter keeps them in its audit meanwhile.",
              _per_second(COLLECTOR_REFUSED, receivers, COLLECTOR_ACCEPTED), unit="short"),
        dashboard.Row("Exporters"),
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
                 "Is telemetry getting through? The collector's receivers, exporters, queues and process.",
                 [collector], items)
