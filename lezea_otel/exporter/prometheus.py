"""The exporter's latest ``MetricsData`` on a Prometheus ``/metrics``, named as the official reader names it.

``opentelemetry-exporter-prometheus``'s ``PrometheusMetricReader`` pulls from a live MeterProvider at
each scrape; the exporter instead holds hand-built ``MetricsData`` (``metrics.py``) and what an
observer MeterProvider's ``InMemoryMetricReader`` collected, and there is no public way to push data
into that reader. :class:`LatestMetrics` is a plain ``prometheus_client`` collector holding the latest
data of each source, translated at scrape time with the official reader's rules (0.66b2), because the
Grafana dashboards and tests query the names it produces, with one departure (``_ratio``):

- metric names: a leading digit becomes ``_``, each run of characters outside ``[a-zA-Z0-9:]`` one
  ``_``; the mapped unit is appended (``s`` -> ``_seconds``, ``By`` -> ``_bytes``, ``m/s`` ->
  ``_meters_per_second``; ``{annotation}`` adds nothing); a gauge of unit ``1`` gets ``_ratio``, as the
  OTel Prometheus compatibility spec and Prometheus 3's own OTLP translation name it (the official reader
  adds nothing: a TODO in its ``_mapping.py``). This is the one departure from that reader: a run scraped
  here and the same run pushed through the Collector to Prometheus's OTLP receiver give the dashboards
  the same series (``collector/prometheus.yaml``, ``tests/test_stack_e2e.py``);
- a Sum is a counter (``_total``) unless it is non-monotonic and cumulative (then a gauge); a
  histogram is ``_bucket{le}``/``_count``/``_sum`` with ``le`` written as ``f"{bound}"``;
- labels: the point's attributes over ``otel_scope_name``/``_version``/``_schema_url`` and
  ``otel_scope_<key>`` for scope attributes, keys sanitised as names (``:`` too becomes ``_``), values
  that are not strings as JSON; missing labels of a family are exposed as ``""``;
- ``target_info`` carries the resource attributes; no timestamps, no exemplars, no resource labels.

Where the official reader would expose something Prometheus rejects (two families of one name, two
samples of one series), this one merges the families and keeps the last sample; see :meth:`collect`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from wsgiref.simple_server import WSGIServer

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.registry import Collector

__all__ = ["LatestMetrics", "ScrapeClock", "prometheus_label", "prometheus_name", "serve"]

logger = logging.getLogger("lezea_otel")  # the project's one logger (warnings tests filter on it)

_NAME_RUNS = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_RUNS = re.compile(r"[^a-zA-Z0-9]+")
_ANNOTATION = re.compile(r"{.*}")  # UCUM annotations, greedily, as the official reader strips them
_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes",
    "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "%": "percent",
    "1": "",  # on a gauge: "ratio" (see _unit)
}
"""UCUM units -> Prometheus suffixes (the OTel Prometheus compatibility spec's table)."""
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_TARGET = ("target", "Target metadata")  # exposed as target_info
_SCOPE_LABEL = "otel_scope_"

_Factory = Callable[..., Family]
_Point = NumberDataPoint | HistogramDataPoint
_StreamKey = tuple[Resource, InstrumentationScope, str]


def _name(name: str) -> str:
    if name and name[0].isdigit():
        name = "_" + name[1:]
    return _NAME_RUNS.sub("_", name)


def _label(key: str) -> str:
    if key and key[0].isdigit():
        key = "_" + key[1:]
    return _LABEL_RUNS.sub("_", key)


def _label_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _unit(unit: str, gauge: bool) -> str:
    if unit == "1" and gauge:
        return "ratio"  # Prometheus's OTLP translation: a dimensionless gauge is a ratio
    unit = _ANNOTATION.sub("", unit)
    if unit in _UNITS:
        return _UNITS[unit]
    top, slash, bottom = unit.partition("/")
    if slash and _NAME_RUNS.sub("_", bottom):
        top, bottom = _NAME_RUNS.sub("_", top), _NAME_RUNS.sub("_", bottom)
        top, bottom = _UNITS.get(top, top), _PER_UNITS.get(bottom, bottom)
        return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _NAME_RUNS.sub("_", unit).strip("_")


def prometheus_name(name: str, unit: str = "", kind: str = "gauge") -> str:
    """The name Prometheus stores an OTel metric under, on /metrics and through the Collector alike
    (``kind``: gauge, counter or histogram; a histogram's series add ``_bucket``, ``_sum``, ``_count``):
    what rules and dashboards query, made from the names module instead of retyped."""
    base, suffix = _name(name), _unit(unit, kind == "gauge")
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return f"{base}_total" if kind == "counter" else base


def prometheus_label(key: str) -> str:
    """The label an attribute key becomes (``lezea.experiment.id`` -> ``lezea_experiment_id``)."""
    return _label(key)


def _factory(data: Any) -> _Factory | None:
    """The family a metric's data becomes; None for what the official reader skips (exponential)."""
    if isinstance(data, Sum):
        if not data.is_monotonic and data.aggregation_temporality == AggregationTemporality.CUMULATIVE:
            return GaugeMetricFamily
        return CounterMetricFamily
    if isinstance(data, Gauge):
        return GaugeMetricFamily
    if isinstance(data, Histogram):
        return HistogramMetricFamily
    return None


def _series_key(point: _Point) -> tuple[Any, ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                        for k, v in (point.attributes or {}).items()))


@dataclass(frozen=True, slots=True)
class _Stream:
    """One metric of one (resource, scope): its Prometheus shape and its latest point per series."""

    factory: _Factory
    name: str
    description: str
    unit: str
    points: Mapping[tuple[Any, ...], _Point]


@dataclass(frozen=True, slots=True)
class _Holding:
    """A source's latest data; never mutated, so a scrape reads it without the lock."""

    resources: tuple[Resource, ...]
    streams: Mapping[_StreamKey, _Stream]


@dataclass(slots=True)
class _Rows:
    factory: _Factory
    name: str
    description: str
    unit: str
    rows: list[tuple[dict[str, str], Any]]


class LatestMetrics(Collector):
    """A ``prometheus_client`` collector: the latest ``MetricsData`` of each named source, merged at scrape.

    Sources (e.g. ``"records"``, ``"observers"``) are updated independently from any thread; a scrape
    exposes them all, in the order they were first updated.
    """

    def __init__(self, before_scrape: Callable[[], None] | None = None) -> None:
        """``before_scrape``: called at each scrape first (the exporter brings the values up to date)."""
        self._before_scrape = before_scrape
        self._lock = threading.Lock()
        self._sources: dict[str, _Holding] = {}
        self._warned: set[str] = set()

    def update(self, source: str, data: MetricsData | None, *, merge: bool = False) -> None:
        """Set ``source``'s data; ``None`` clears it.

        With ``merge``, ``data`` holds only what changed (as ``MetricsBuilder.collect()`` returns): its
        points replace those of the same series and the source's other series stay; ``None`` changes
        nothing. Without it, ``data`` is the whole state (an ``InMemoryMetricReader`` collection), so a
        series that is gone from it is gone from ``/metrics``.
        """
        with self._lock:
            previous = self._sources.get(source) if merge else None
            if data is None:
                if not merge:
                    self._sources.pop(source, None)
                return
            resources = dict.fromkeys(previous.resources if previous else ())
            streams = dict(previous.streams) if previous else {}
            for resource_metrics in data.resource_metrics:
                resources[resource_metrics.resource] = None
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        factory = _factory(metric.data)
                        if factory is None:
                            self._warn_once(metric.name, "its data type %s has no Prometheus form",
                                            type(metric.data).__name__)
                            continue
                        key = (resource_metrics.resource, scope_metrics.scope, metric.name)
                        shape = (factory, _name(metric.name), metric.description or "",
                                 _unit(metric.unit or "", isinstance(metric.data, Gauge)))
                        known = streams.get(key)
                        points: dict[tuple[Any, ...], _Point] = {}
                        if known is not None and (known.factory, known.name, known.description,
                                                  known.unit) == shape:
                            points.update(known.points)
                        for point in cast(Iterable[_Point], metric.data.data_points):
                            points[_series_key(point)] = point
                        streams[key] = _Stream(*shape, points)
            self._sources[source] = _Holding(tuple(resources), streams)

    def describe(self) -> list[Family]:
        """Nothing: registration must not scrape (and the names change as training keys appear)."""
        return []

    def collect(self) -> Iterable[Family]:
        """``target_info`` (one sample per distinct resource), then one family per exposed name.

        Streams that expose one name as one type (two sources with equal resource and scope, two
        scopes, two resources) are one family with the union of their labels and the first one's
        description; of two samples of one series the last is kept.
        """
        if self._before_scrape is not None:
            try:
                self._before_scrape()
            except Exception:
                logger.exception("lezea_otel: bringing /metrics up to date failed")
        with self._lock:
            holdings = list(self._sources.values())
        families: list[Family] = []
        resources = dict.fromkeys(resource for holding in holdings for resource in holding.resources)
        if resources:
            info = InfoMetricFamily(*_TARGET)
            seen: set[tuple[tuple[str, str], ...]] = set()
            for resource in resources:
                labels = {_label(k): _label_value(v) for k, v in resource.attributes.items()}
                if tuple(labels.items()) not in seen:
                    seen.add(tuple(labels.items()))
                    info.add_metric([], labels)
            families.append(info)
        by_name: dict[tuple[str, _Factory], _Rows] = {}
        scopes: dict[InstrumentationScope, dict[str, str]] = {}
        for holding in holdings:
            for (_resource, scope, otel_name), stream in holding.streams.items():
                rows = self._rows_for(by_name, stream, otel_name)
                if rows is None:
                    continue
                scope_labels = scopes.get(scope)
                if scope_labels is None:
                    scope_labels = scopes[scope] = _scope_labels(scope)
                for point in stream.points.values():
                    labels = dict(scope_labels)
                    labels.update((_label(k), _label_value(v)) for k, v in (point.attributes or {}).items())
                    if isinstance(point, HistogramDataPoint):
                        bounds = [f"{bound}" for bound in point.explicit_bounds] + ["+Inf"]
                        cumulative, buckets = 0, []
                        for bound, count in zip(bounds, point.bucket_counts, strict=False):
                            cumulative += count
                            buckets.append((bound, cumulative))
                        rows.rows.append((labels, (buckets, point.sum)))
                    else:
                        rows.rows.append((labels, point.value))
        families.extend(_family(rows) for rows in by_name.values())
        return families

    def _rows_for(self, by_name: dict[tuple[str, _Factory], _Rows], stream: _Stream,
                  otel_name: str) -> _Rows | None:
        try:
            exposed = stream.factory(stream.name, stream.description, labels=[], unit=stream.unit).name
        except ValueError as error:  # a name prometheus_client refuses: the metric, not the scrape, fails
            self._warn_once(otel_name, "%s", error)
            return None
        rows = by_name.get((exposed, stream.factory))
        if rows is None:
            rows = by_name[(exposed, stream.factory)] = _Rows(
                stream.factory, stream.name, stream.description, stream.unit, [])
        return rows

    def _warn_once(self, name: str, why: str, *args: object) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("Metric %r is left out of /metrics: " + why, name, *args)


def _scope_labels(scope: InstrumentationScope) -> dict[str, str]:
    labels = {_label(_SCOPE_LABEL + k): _label_value(v) for k, v in (scope.attributes or {}).items()}
    labels.update(otel_scope_name=scope.name or "", otel_scope_version=scope.version or "",
                  otel_scope_schema_url=scope.schema_url or "")
    return labels


def _family(rows: _Rows) -> Family:
    keys = sorted({key for labels, _value in rows.rows for key in labels})
    series = {tuple(labels.get(key, "") for key in keys): value for labels, value in rows.rows}
    family = rows.factory(rows.name, rows.description, labels=keys, unit=rows.unit)
    for label_values, value in series.items():
        if isinstance(family, HistogramMetricFamily):
            family.add_metric(list(label_values), buckets=value[0], sum_value=value[1])
        else:
            cast(GaugeMetricFamily, family).add_metric(list(label_values), value)
    return family


def serve(port: int, addr: str, collector: LatestMetrics,
          extra: Iterable[object] = ()) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``collector`` (and ``extra`` collectors, e.g. a scrape clock) on ``http://addr:port/metrics``.

    A registry of its own, never the global one, so two trackers in one process do not collide.
    Port 0 picks a free port (``server.server_port``). Raises ``OSError`` when the port is taken.
    Stop with ``server.shutdown(); server.server_close()``.
    """
    registry = CollectorRegistry()
    registry.register(collector)
    for other in extra:
        registry.register(cast(Collector, other))
    return start_http_server(port, addr=addr, registry=registry)


class ScrapeClock:
    """A collector that yields nothing and notes when Prometheus scrapes. A pulled run that ends
    between two scrapes would look like one that died; finalize waits (bounded) for one more."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=2)
        self._scraped = threading.Condition()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        with self._scraped:
            self._times.append(time.monotonic())
            self._scraped.notify_all()
        return []

    def wait_for_next(self, limit_s: float) -> bool:
        """True when a scrape came. No wait when nothing scrapes this endpoint regularly, or when the
        next scrape is not due within ``limit_s`` (a 60 s scrape interval must not hold finalize)."""
        times = self._times
        if len(times) < 2:
            return False
        interval = times[-1] - times[-2]
        since = time.monotonic()
        due_in = times[-1] + interval - since
        if due_in > limit_s:
            return False
        with self._scraped:
            wait_s = min(limit_s, max(due_in, 0.0) + interval / 2)
            return self._scraped.wait_for(lambda: times[-1] > since, wait_s)
