"""Records -> hand-built ``MetricsData``, each point at the time of the record that set it.

The in-process recorder keeps a latest-value table that observable gauges read at collection time;
here the table is fed from the audit and :meth:`MetricsBuilder.collect` turns what changed since the
last collection into points stamped with their own record's time (the full per-step history stays in
the audit). Counters and histograms are cumulative from the run's start, as in-process; the phase
histogram keeps the last phase per bucket as its exemplar, linked to the phase's span.

Prometheus stores milliseconds, and its OTLP receiver refuses a second value of a series in one
millisecond by rolling back the whole request (HTTP 400, which the Collector does not retry: it drops
the request after acknowledging it). So a series' point never shares the millisecond of the point sent
before it: a value set within it goes out one millisecond later. A counter or histogram sent again
unchanged is stamped with the newest record read, as a cumulative SDK stamps each collection, so
``rate()`` and ``increase()`` see it go on (a scrape of /metrics has that by its own clock).

Instrument names, units, series attributes and caps are those of the first wave's in-process
instruments, so dashboards and queries carry over. Everything a builder returns is one
``ResourceMetrics`` with one ``ScopeMetrics``; ``convert.merge_metrics`` combines several (workers, runs)
by (resource, scope), since the proto encoder keeps only the last of two equal resources or scopes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from lezea_otel import semconv as names
from lezea_otel.audit.record import Kind
from lezea_otel.exporter.instruments import COUNTERS, GAUGES, HISTOGRAMS, MAX_SERIES_PER_NAME, metric_name
from lezea_otel.exporter.labels import Labels, LabelSets
from lezea_otel.exporter.records import SCOPE, AuditRecord
from lezea_otel.util.safety import encodable_attributes, encodable_number

DEFAULT_MAX_NAMES = 256
"""Training keys before the overflow gauge (LEZEA_MAX_METRIC_NAMES), if ``experiment_start`` lacks it."""
_MB = 2**20
_MS = 1_000_000
_OVERFLOW_KEY: tuple[Any, ...] = (("__overflow__", True),)
_MAX_KEYS_REMEMBERED = 4 * MAX_SERIES_PER_NAME  # keys past the name cap remembered; then looked up per call
def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


@dataclass(slots=True)
class _Series:
    attributes: dict[str, Any]
    value: float | int = 0
    time_ns: int = 0
    changed: bool = True
    counts: list[int] = field(default_factory=list)
    count: int = 0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    exemplars: dict[int, tuple[float, int, int, int]] = field(default_factory=dict)
    """Per bucket, its latest phase: (value, time, span id, trace id) of its ``Exemplar``."""
    sent_ns: int = 0
    """The time of the point collected last (see the module's doc)."""


@dataclass(slots=True)
class _Instrument:
    name: str
    kind: type[Gauge | Sum | Histogram]
    unit: str = ""
    description: str = ""
    bounds: tuple[float, ...] = ()
    series: dict[tuple[Any, ...], _Series] = field(default_factory=dict)


class MetricsBuilder:
    """One audit's metric state; :meth:`feed` records in order, :meth:`collect` once per export interval."""

    def __init__(self, resource: Resource, constant_attributes: dict[str, Any],
                 scope: InstrumentationScope = SCOPE, max_names: int = DEFAULT_MAX_NAMES) -> None:
        self.resource = resource
        self.scope = scope
        self.max_names = max_names
        self.start_ns: int | None = None
        self.read_ns = 0
        """The newest record time fed: an unchanged cumulative series sent again is stamped with it."""
        self.overflowed = 0
        """Values folded into an overflow series (past a cap): counted; the trainer warned already."""
        self._constant = encodable_attributes(constant_attributes)
        self._instruments: dict[str, _Instrument] = {}
        self._training: dict[str, _Instrument] = {}
        self._component_types: dict[str, str] = {}
        self._cost_totals: dict[str, float] = {}
        self._label_sets = LabelSets(self._constant)
        self._step_gauge: _Series | None = None
        self._step_time_gauge: _Series | None = None
        self._handlers: dict[str, Callable[[AuditRecord], None]] = {
            Kind.TRAINING_STEP: self._training_step, Kind.EXPERIMENT_START: self._experiment_start,
            Kind.EXPERIMENT_END: self._experiment_end, Kind.PHASE: self._phase,
            Kind.TORCH_MEMORY: self._torch_memory,
            Kind.MODIFICATION_TREE: self._modification_tree,
            Kind.MODIFICATION_TREE_STATS: lambda r: self._stats(r, r.data.get("statistics"), "tree"),
            Kind.MODIFICATION_STATS: lambda r: self._stats(r, r.data.get("statistics"), "modification"),
            Kind.DATA_SPLITS: self._data_splits, Kind.DATA_USAGE: self._data_usage,
            Kind.DATA_SCORE: self._data_score, Kind.DELTA_LOSS: self._delta_loss,
            Kind.RESOURCE: self._resource, Kind.CHECKPOINT: self._checkpoint,
            Kind.REWARD: self._reward, Kind.RESULTS: self._results, Kind.RESOURCE_COST: self._resource_cost,
            Kind.BUSINESS_METRICS: self._business, Kind.COMMENT: lambda r: self._comment(r, "comment"),
            Kind.CONCLUSION: lambda r: self._comment(r, "conclusion"),
        }

    def feed(self, record: AuditRecord) -> None:
        if record.time_ns > self.read_ns:
            self.read_ns = record.time_ns
        handler = self._handlers.get(record.kind)
        if handler is not None:
            if self.start_ns is None:
                self.start_ns = record.time_ns
            handler(record)

    def collect(self, everything: bool = False) -> MetricsData | None:
        """Points of the series changed since the last collection (``everything``: all); None when none."""
        metrics = []
        start = self.start_ns or 0
        for instrument in self._instruments.values():
            points: list[Any] = []
            for series in instrument.series.values():
                if not (series.changed or everything):
                    continue
                time_ns = self._point_time(series, cumulative=instrument.kind is not Gauge)
                series.changed = False
                if instrument.kind is Histogram:
                    points.append(HistogramDataPoint(
                        series.attributes, start, time_ns, series.count, series.value,
                        list(series.counts), instrument.bounds, series.minimum, series.maximum,
                        # the latest phase per bucket, until a newer one
                        [Exemplar({}, *exemplar) for exemplar in series.exemplars.values()]))
                elif instrument.kind is Sum or series.value - series.value == 0:  # a NaN gauge: no point
                    points.append(NumberDataPoint(series.attributes, start, time_ns, series.value))
            if not points:
                continue
            data: Gauge | Sum | Histogram
            if instrument.kind is Histogram:
                data = Histogram(points, AggregationTemporality.CUMULATIVE)
            elif instrument.kind is Sum:
                data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
            else:
                data = Gauge(points)
            metrics.append(Metric(instrument.name, instrument.description, instrument.unit, data))
        if not metrics:
            return None
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(self.scope, metrics, "")], "")])

    def _point_time(self, series: _Series, cumulative: bool) -> int:
        """The time of ``series``' point now: its record's, or the newest record's for an unchanged
        cumulative one, never in the millisecond of its previous point; the same point again (its
        previous time) when nothing is new."""
        if series.changed:
            time_ns = series.time_ns
        elif cumulative and self.read_ns // _MS > series.sent_ns // _MS:
            time_ns = self.read_ns
        else:
            return series.sent_ns
        if series.sent_ns and time_ns // _MS <= series.sent_ns // _MS:
            time_ns = (series.sent_ns // _MS + 1) * _MS
        series.sent_ns = time_ns
        return time_ns

    # --- the three ways a value lands ------------------------------------------------------------

    def _instrument(self, name: str, kind: type[Gauge | Sum | Histogram], unit: str = "",
                    description: str = "", bounds: tuple[float, ...] = ()) -> _Instrument:
        instrument = self._instruments.get(name)
        if instrument is None:
            if kind is Sum:
                unit, description = COUNTERS.get(name, (unit, description))
            elif kind is Histogram:
                unit, description, bounds = HISTOGRAMS[name]
            else:
                unit, description = GAUGES.get(name, (unit, description))
            instrument = self._instruments[name] = _Instrument(name, kind, unit, description, tuple(bounds))
        return instrument

    def _series(self, instrument: _Instrument, labels: Labels) -> _Series:
        """The series of ``labels`` (from :meth:`_labels`), made with a copy of its attributes."""
        attributes, key = labels
        series = instrument.series.get(key)
        if series is None:
            if len(instrument.series) >= MAX_SERIES_PER_NAME:
                self.overflowed += 1
                key, attributes = _OVERFLOW_KEY, {**self._constant, names.OVERFLOW: True}
                series = instrument.series.get(key)
            if series is None:
                buckets = len(instrument.bounds) + 1 if instrument.kind is Histogram else 0
                series = instrument.series[key] = _Series(dict(attributes), counts=[0] * buckets)
        series.changed = True
        return series

    def _labels(self, scope: str, extra: dict[str, Any] | None = None) -> Labels:
        """A point's attributes (the constant ones, the scope, ``extra``) and their series key."""
        return self._label_sets.get(scope, extra)

    def _gauge(self, record: AuditRecord, name: str, value: Any, extra: dict[str, Any] | None = None,
               unit: str = "", scope: str = "") -> _Series:
        series = self._series(self._instrument(name, Gauge, unit), self._labels(scope, extra))
        series.value, series.time_ns = encodable_number(value), record.time_ns
        return series

    def _add(self, record: AuditRecord, name: str, amount: Any, extra: dict[str, Any] | None = None) -> None:
        series = self._series(self._instrument(name, Sum), self._labels("", extra))  # counters have no scope
        series.value, series.time_ns = series.value + encodable_number(amount), record.time_ns

    def _observe(self, record: AuditRecord, name: str, value: float, extra: dict[str, Any], scope: str,
                 exemplar: bool) -> None:
        instrument = self._instrument(name, Histogram)
        series = self._series(instrument, self._labels(scope, extra))
        bounds = instrument.bounds
        # the first bucket whose bound is >= value; NaN (never <= a bound) in the last one
        bucket = bisect_left(bounds, value) if value == value else len(bounds)
        series.counts[bucket] += 1
        series.count += 1
        series.value += value
        if value < series.minimum:  # as min() and max(): a NaN changes neither
            series.minimum = value
        if value > series.maximum:
            series.maximum = value
        series.time_ns = record.time_ns
        if exemplar and record.trace_id and record.span_id:  # made at collection: most are overwritten first
            series.exemplars[bucket] = (value, record.time_ns, record.span_id, record.trace_id)

    # --- one handler per record kind (the metric half of mapping.py) ----------------------------------

    def _training_step(self, record: AuditRecord) -> None:
        time_ns = record.time_ns
        if record.step is not None:
            self._step_gauge = self._one_series_gauge(self._step_gauge, record, names.TRAINING_STEP,
                                                      float(encodable_number(record.step)))
        self._step_time_gauge = self._one_series_gauge(self._step_time_gauge, record,
                                                       names.TRAINING_LAST_STEP_TIME, time_ns / 1e9)
        metric_values = record.metric_values()
        if not metric_values:
            return
        split = record.data.get("data_split")
        labels = self._labels(record.scope, {names.DATA_SPLIT: split} if isinstance(split, str) else None)
        training = self._training
        for key, value in metric_values.items():  # the hot loop: a step's values, inlined
            kind = type(value)
            if kind is not float and kind is not int:
                continue
            series = self._series(training.get(key) or self._training_instrument(key), labels)
            series.value, series.time_ns = value if kind is float else encodable_number(value), time_ns
            if value - value != 0:
                self._add(record, names.TRAINING_NONFINITE, 1, {**labels[0], names.METRIC_KEY: key})

    def _one_series_gauge(self, known: _Series | None, record: AuditRecord, name: str,
                          value: float) -> _Series:
        """:meth:`_gauge` of a float gauge with one series (no scope, no attributes of its own): the
        series is found once and set as ``_gauge`` sets it from then on."""
        if known is None:
            return self._gauge(record, name, value)
        known.changed, known.value, known.time_ns = True, value, record.time_ns
        return known

    def _training_instrument(self, key: str) -> _Instrument:
        instrument = self._training.get(key)
        if instrument is None:
            if len(self._training) >= self.max_names:
                self.overflowed += 1
                instrument = self._instrument(names.TRAINING_OVERFLOW, Gauge)
                if len(self._training) >= self.max_names + _MAX_KEYS_REMEMBERED:
                    return instrument
            else:
                instrument = self._instrument(metric_name(key), Gauge, "", f"Training value {key!r}")
            self._training[key] = instrument
        return instrument

    def _experiment_start(self, record: AuditRecord) -> None:
        self.start_ns = record.time_ns
        cap = record.data.get("max_metric_names")
        if type(cap) is int and cap > 0:
            self.max_names = cap
        self._gauge(record, names.RUN_STATE, 1.0, {names.RUN_STATUS: "running"})
        self._gauge(record, names.RUN_START_TIME, record.time_ns / 1e9)
        limit = record.data.get("cost_limit_eur")
        if _is_number(limit):
            self._gauge(record, names.COST_LIMIT, limit)

    def _experiment_end(self, record: AuditRecord) -> None:
        status = str(record.data.get("status") or "finished")
        self._gauge(record, names.RUN_STATE, 0.0, {names.RUN_STATUS: "running"})
        self._gauge(record, names.RUN_STATE, 1.0, {names.RUN_STATUS: status})
        duration = record.data.get("duration_s")
        if _is_number(duration):
            self._gauge(record, names.RUN_DURATION, duration, unit=names.UNIT_SECONDS)

    def _phase(self, record: AuditRecord) -> None:
        duration, name = record.data.get("duration_s"), record.data.get("name")
        if isinstance(duration, (int, float)) and isinstance(name, str):
            labels = {names.PHASE_NAME: name}
            attributes = record.data.get("attributes")
            if isinstance(attributes, dict) and attributes.get(names.PHASE_KIND) == names.DATA_WAIT:
                labels[names.PHASE_KIND] = names.DATA_WAIT  # the data-wait share (alert, dashboards)
            self._observe(record, names.PHASE_DURATION, float(duration), labels, record.scope, True)
            gpu = record.data.get("gpu_duration_s")
            if isinstance(gpu, (int, float)) and not isinstance(gpu, bool):
                self._observe(record, names.PHASE_GPU_DURATION, float(gpu), {names.PHASE_NAME: name},
                              record.scope, True)

    def _torch_memory(self, record: AuditRecord) -> None:
        """The trainer's reading of the CUDA allocator (only it can read it): a gauge per device."""
        devices = record.data.get("devices")
        for device, stats in devices.items() if isinstance(devices, dict) else ():
            for name, key in ((names.TORCH_ALLOCATED, "allocated"), (names.TORCH_RESERVED, "reserved"),
                              (names.TORCH_PEAK, "peak")):
                value = stats.get(key) if isinstance(stats, dict) else None
                if _is_number(value):
                    self._gauge(record, name, value, {names.TORCH_DEVICE: str(device)}, names.UNIT_BYTES)

    def _modification_tree(self, record: AuditRecord) -> None:
        modifications = record.data.get("modifications")
        if isinstance(modifications, list) and modifications:
            self._add(record, names.MODIFICATION_COUNT, len(modifications))
        self._stats(record, record.data.get("statistics"), "tree")

    def _stats(self, record: AuditRecord, statistics: Any, source: str) -> None:
        for key, value in (statistics.items() if isinstance(statistics, dict) else ()):
            if isinstance(value, float):
                self._gauge(record, names.MODIFICATION_STAT, value,
                            {names.STAT_NAME: key, names.STAT_SOURCE: source}, scope=record.scope)

    def _data_splits(self, record: AuditRecord) -> None:
        for split, entry in record.data.items():
            if isinstance(entry, dict) and _is_number(entry.get("count")):
                self._gauge(record, names.DATA_SPLIT_SIZE, float(encodable_number(entry["count"])),
                            {names.SPLIT_NAME: split})

    def _data_usage(self, record: AuditRecord) -> None:
        if _is_number(record.data.get("count")):
            self._add(record, names.DATA_SAMPLES_USED, record.data["count"])

    def _data_score(self, record: AuditRecord) -> None:
        score = record.data.get("score")
        if isinstance(score, float) and score >= 0:  # a histogram takes no negatives (the audit keeps them)
            self._observe(record, names.DATA_SCORE, score, {}, record.scope, False)

    def _delta_loss(self, record: AuditRecord) -> None:
        epoch = record.data.get("epoch")
        if _is_number(epoch):
            self._gauge(record, names.EPOCH, float(encodable_number(epoch)), scope=record.scope)
        for key, name in (("loss", names.EPOCH_LOSS), ("delta_loss", names.EPOCH_DELTA_LOSS)):
            if isinstance(record.data.get(key), float):
                self._gauge(record, name, record.data[key], scope=record.scope)

    def _resource(self, record: AuditRecord) -> None:
        data = record.data
        component = data.get("component_id")
        if not isinstance(component, str):
            return
        if isinstance(data.get("component_type"), str) and data["component_type"]:
            self._component_types[component] = data["component_type"]  # later log_resource() joins the series
        attributes = {names.COMPONENT_ID: component}
        if component in self._component_types:
            attributes[names.COMPONENT_TYPE] = self._component_types[component]
        for key, name, scale, unit in (
            ("cpu_percent", names.COMPONENT_CPU, 0.01, names.UNIT_RATIO),
            ("gpu_percent", names.COMPONENT_GPU, 0.01, names.UNIT_RATIO),
            ("memory_mb", names.COMPONENT_MEMORY, _MB, names.UNIT_BYTES),
            ("io_operations", names.COMPONENT_IO, 1.0, "{operation}"),
        ):
            if isinstance(data.get(key), float):
                self._gauge(record, name, data[key] * scale, attributes, unit, scope=record.scope)

    def _checkpoint(self, record: AuditRecord) -> None:
        self._add(record, names.CHECKPOINTS, 1)
        size = record.data.get("size_bytes")
        if _is_number(size) and size:
            self._add(record, names.CHECKPOINT_SIZE, size)

    def _reward(self, record: AuditRecord) -> None:
        data = record.data
        if _is_number(data.get("reward")):
            agent = {names.AGENT_ROLE: data.get("role"), names.AGENT_ID: data.get("agent_id")}
            self._gauge(record, names.REWARD, data["reward"], agent, scope=record.scope)

    def _results(self, record: AuditRecord) -> None:
        results = record.data.get("result_dict")
        for key, value in (results.items() if isinstance(results, dict) else ()):
            if isinstance(value, float):
                self._gauge(record, names.RESULT, value, {names.METRIC_KEY: key}, scope=record.scope)
        for role in ("tasker", "builder"):
            rewards = record.data.get(f"{role}_rewards")
            for agent, reward in (rewards.items() if isinstance(rewards, dict) else ()):
                if _is_number(reward):
                    self._gauge(record, names.REWARD, reward, {names.AGENT_ROLE: role, names.AGENT_ID: agent},
                                scope=record.scope)

    def _resource_cost(self, record: AuditRecord) -> None:
        for kind, value in record.data.items():
            if isinstance(value, float):  # the running total, as the summary shows it
                self._cost_totals[kind] = self._cost_totals.get(kind, 0.0) + value
                self._gauge(record, names.COST, self._cost_totals[kind], {names.COST_KIND: kind})

    def _business(self, record: AuditRecord) -> None:
        figures = record.data.get("metrics")
        for key, value in (figures.items() if isinstance(figures, dict) else ()):
            if _is_number(value):
                self._gauge(record, names.BUSINESS, value, {names.METRIC_KEY: key})

    def _comment(self, record: AuditRecord, kind: str) -> None:
        self._add(record, names.COMMENTS, 1, {names.COMMENT_KIND: kind})

