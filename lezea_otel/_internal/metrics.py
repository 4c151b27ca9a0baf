"""Metrics: a latest-value table read by observable gauges, plus a few synchronous instruments.

A training step only writes floats into a dict; the SDK reads the table when its reader collects
(every export interval, or a Prometheus scrape). Prometheus sees the same sampled values a
synchronous gauge would give, and the full per-step history lives in the audit. Synchronous
instruments are kept for rare events where every one matters (phase durations, checkpoints).

A collection may land at any moment of a write, on another thread: a series' attributes are always
published before its value, so a reader that sees the value finds its attributes. Everything handed
to the SDK is encodable (ints within int64, valid UTF-8 text): one integer >= 2**63 would otherwise
fail every later export of the metrics batch that holds it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider

from . import names
from .safety import encodable_attributes, encodable_number

MAX_SERIES_PER_NAME = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")
_OVERFLOW_KEY = ("__overflow__",)
_MAX_CACHED = 4 * MAX_SERIES_PER_NAME
"""Scope/split attribute sets (and keys past the name cap) remembered; past it they are computed per call."""


class _Table:
    """Latest value per attribute set for one observable gauge. Writers publish ``attributes[key]``
    before ``values[key]``, so a key in ``values`` always has its attributes."""

    __slots__ = ("attributes", "values")

    def __init__(self) -> None:
        self.values: dict[Any, float] = {}
        self.attributes: dict[Any, dict[str, Any]] = {}

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        current = self.values.copy()  # one C-level copy: safe against writers on other threads
        # The SDK drops non-finite observations (with a log line per collection); they are
        # counted in lezea.training.nonfinite instead, and kept in the audit.
        return [Observation(value if type(value) is float else encodable_number(value), self.attributes[key])
                for key, value in current.items() if value - value == 0]


# The SDK's default buckets (0, 5, 10, ... 10000) are for milliseconds; phases are seconds, from a
# millisecond forward pass to an hour-long evaluation. Score buckets straddle zero: losses can rise.
PHASE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0, 1800.0, 3600.0)
DATA_SCORE_BUCKETS = (-1.0, -0.1, -0.01, -0.001, 0.0, 0.001, 0.01, 0.1, 1.0)


class MetricRecorder:
    def __init__(
        self,
        provider: MeterProvider,
        version: str,
        constant_attributes: dict[str, Any],
        max_names: int,
        warn: Callable[[str, str, str], None],
    ) -> None:
        self._meter: Meter = provider.get_meter(names.INSTRUMENTATION_NAME, version)
        self._constant = constant_attributes = encodable_attributes(constant_attributes)
        self._max_names = max_names
        self._warn = warn
        self._lock = threading.Lock()
        self._training: dict[str, _Table] = {}
        self._gauges: dict[str, _Table] = {}
        self._training_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.step: float | None = None
        self.step_time_s: float | None = None
        self.values_recorded = 0
        self._meter.create_observable_gauge(
            names.TRAINING_STEP, [self._observe_step], description="Last step passed to log_training_step"
        )
        self._meter.create_observable_gauge(
            names.TRAINING_LAST_STEP_TIME, [self._observe_step_time], unit=names.UNIT_SECONDS,
            description="Unix time of the last training step: time() minus this is 'time since last step'")
        self._meter.create_observable_gauge(
            names.RUN_HEARTBEAT, [self._observe_heartbeat], unit=names.UNIT_SECONDS,
            description="Unix time at each collection while the process lives; a stale value means a dead run")
        started = [Observation(time.time(), constant_attributes)]
        self._meter.create_observable_gauge(
            names.RUN_START_TIME, [lambda _options: started], unit=names.UNIT_SECONDS,
            description="Unix time the run started: 'started at' and run duration on dashboards")
        self._counters = {
            name: self._meter.create_counter(name, unit=unit, description=description)
            for name, unit, description in (
                (names.CHECKPOINTS, "{checkpoint}", "Checkpoints logged"),
                (names.CHECKPOINT_SIZE, names.UNIT_BYTES, "Bytes of checkpoints logged"),
                (names.COMMENTS, "{comment}", "Comments and conclusions logged"),
                (names.DATA_SAMPLES_USED, "{sample}", "Samples reported by log_data_usage"),
                (names.MODIFICATION_COUNT, "{modification}", "Modifications in logged trees"),
                (names.WARNINGS, "{warning}", "Bad inputs the tracker warned about"),
                (names.TRAINING_NONFINITE, "{value}", "NaN or infinite training values (kept in the audit)"),
            )
        }
        self._histograms = {
            name: self._meter.create_histogram(name, unit=unit, description=description,
                                               explicit_bucket_boundaries_advisory=buckets)
            for name, unit, description, buckets in (
                (names.PHASE_DURATION, names.UNIT_SECONDS, "Duration of user phases (tracker.span)",
                 PHASE_BUCKETS_S),
                (names.DATA_SCORE, "", "Loss improvement per scored sample (before - after)",
                 DATA_SCORE_BUCKETS),
            )
        }

    def _observe_step(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [] if self.step is None else [Observation(self.step, self._constant)]

    def _observe_step_time(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [] if self.step_time_s is None else [Observation(self.step_time_s, self._constant)]

    def _observe_heartbeat(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(time.time(), self._constant)]

    # --- training values: the hot path -------------------------------------------------------

    def set_training(self, values: dict[str, float], scope: tuple[str, ...], split: str | None) -> None:
        attr_key = (scope, split)
        attrs = self._training_attrs.get(attr_key)
        if attrs is None:
            attrs = self._with_scope(scope, split)
            if len(self._training_attrs) < _MAX_CACHED:  # past it, series fold anyway: nothing more is kept
                self._training_attrs[attr_key] = attrs
        tables = self._training
        for key, value in values.items():
            table = tables.get(key)
            if table is None:
                table = self._new_training_table(key)
            series = table.values
            if attr_key in series or len(series) < MAX_SERIES_PER_NAME:
                if attr_key not in table.attributes:  # attributes first: a collection may land in between
                    table.attributes[attr_key] = attrs
                series[attr_key] = value
            else:
                self._overflow(table, key, value)
        self.values_recorded += len(values)
        total = sum(values.values())
        if total - total != 0:  # some value is NaN or infinite: rare, so checked only then
            for key, value in values.items():
                if value - value != 0:
                    self.add(names.TRAINING_NONFINITE, 1, {**attrs, names.METRIC_KEY: key})

    def _new_training_table(self, key: str) -> _Table:
        with self._lock:
            table = self._training.get(key)
            if table is not None:
                return table
            if len(self._training) >= self._max_names:
                self._warn(
                    "log_training_step",
                    f"more than {self._max_names} distinct metric keys",
                    f"{key!r} and later keys go to {names.TRAINING_OVERFLOW} (LEZEA_MAX_METRIC_NAMES)",
                )
                table = self._gauges.get(names.TRAINING_OVERFLOW) or self._new_gauge(names.TRAINING_OVERFLOW, "")
                if len(self._training) >= self._max_names + _MAX_CACHED:
                    return table  # keys past the cap cost nothing more than a lookup
            else:
                table = _Table()
                self._meter.create_observable_gauge(
                    metric_name(key), [table.observe], description=f"Training value {key!r}"
                )
            self._training[key] = table
            return table

    def _overflow(self, table: _Table, key: str, value: float) -> None:
        self._warn("log_training_step", f"more than {MAX_SERIES_PER_NAME} scope/split combinations for one key",
                   f"{key!r}: later ones are folded into one series marked {names.OVERFLOW}")
        table.attributes[_OVERFLOW_KEY] = {**self._constant, names.OVERFLOW: True}
        table.values[_OVERFLOW_KEY] = value

    def _with_scope(self, scope: tuple[str, ...], split: str | None) -> dict[str, Any]:
        attributes = dict(self._constant)
        if scope:
            attributes[names.SCOPE_PATH] = "/".join(scope)
        if split is not None:
            attributes[names.DATA_SPLIT] = split
        return encodable_attributes(attributes)

    # --- rare values --------------------------------------------------------------------------

    def set_gauge(self, name: str, value: float, attributes: dict[str, Any], unit: str = "",
                  scope: tuple[str, ...] = ()) -> None:
        table = self._gauges.get(name)
        if table is None:
            with self._lock:
                table = self._gauges.get(name) or self._new_gauge(name, unit)
        full = {**self._with_scope(scope, None), **encodable_attributes(attributes)}
        key = tuple(sorted(full.items(), key=lambda item: item[0]))
        key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in key)
        if key not in table.values and len(table.values) >= MAX_SERIES_PER_NAME:
            self._overflow(table, name, value)
            return
        table.attributes[key] = full
        table.values[key] = value
        self.values_recorded += 1

    def _new_gauge(self, name: str, unit: str) -> _Table:
        table = _Table()
        self._meter.create_observable_gauge(name, [table.observe], unit=unit)
        self._gauges[name] = table
        return table

    def add(self, name: str, amount: float, attributes: dict[str, Any] | None = None) -> None:
        self._counters[name].add(encodable_number(amount), {**self._constant, **encodable_attributes(attributes)})
        self.values_recorded += 1

    def record(self, name: str, amount: float, attributes: dict[str, Any], context: Any = None,
               scope: tuple[str, ...] = ()) -> None:
        """A histogram value; recorded inside its span's context so the exemplar links the trace."""
        self._histograms[name].record(encodable_number(amount), {**self._with_scope(scope, None),
                                                                 **encodable_attributes(attributes)}, context=context)
        self.values_recorded += 1


def metric_name(key: str) -> str:
    """``lezea.training.<key>``: OTel-legal, at most 255 characters, stable for one key."""
    return (names.TRAINING_PREFIX + _UNSAFE.sub("_", key))[:255]
