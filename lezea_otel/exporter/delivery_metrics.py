"""The run's delivery report as metrics: what the exporter produced, delivered and refused, per destination
and signal, how far behind the audit it is, and how long its export requests take.

The report (``summary["delivery"]``, ``exporter/report.json``) says it once the run ended; these say it while
the run lives, on the same metric paths as the run's own metrics (the collector and ``/metrics``), so the
Pipeline health dashboard and the ``LezeaExporterBehind``/``LezeaTelemetryDropped`` alerts see a run whose
telemetry is not getting through. They come from a real SDK ``MeterProvider`` (observable instruments read
the followers' counts at each collection; a histogram takes each request's duration), read through an
``InMemoryMetricReader`` like the observers' metrics.

The metrics of a destination travel through every destination: the collector's own lag reaches Prometheus
by the scrape of ``/metrics`` even while the collector is down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource

from lezea_otel import semconv as names
from lezea_otel.exporter.follow import Follower
from lezea_otel.util.safety import report_internal_error
from lezea_otel.version import __version__

UNITS = {names.EXPORT_ITEMS: "{item}", names.EXPORT_FAILURES: "{request}", names.EXPORT_LEFT: "{item}",
         names.EXPORT_LAG_RECORDS: "{record}", names.EXPORT_LAG_TIME: names.UNIT_SECONDS,
         names.EXPORT_DURATION: names.UNIT_SECONDS}
"""Each instrument's unit (the mixin's Prometheus names are made from them)."""
DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0)
"""From a local file write (well under a millisecond) to a collector's request timeout (10 s by default)."""


class DeliveryMetrics:
    """The followers' counts and lag, observed at each collection, and their export requests' durations."""

    def __init__(self, resource: Resource, constant_attributes: dict[str, Any],
                 followers: Sequence[Follower]) -> None:
        """
        Args:
            resource: the trainer's (from its ``experiment_start`` record), as the run's other metrics.
            constant_attributes: on every point (the experiment and rank), as the run's metrics carry them.
            followers: one per destination; read, never changed.
        """
        self._constant = dict(constant_attributes)
        self._followers = tuple(followers)
        self._reader = InMemoryMetricReader()
        # shutdown_on_exit=False: an atexit hook per run would outlive the run
        provider = MeterProvider(metric_readers=[self._reader], resource=resource, shutdown_on_exit=False)
        meter = provider.get_meter(names.INSTRUMENTATION_NAME, __version__)
        meter.create_observable_counter(
            names.EXPORT_ITEMS, [self._items], unit=UNITS[names.EXPORT_ITEMS],
            description="Spans, metric batches and log records the exporter produced, delivered and refused")
        meter.create_observable_counter(
            names.EXPORT_FAILURES, [self._failures], unit=UNITS[names.EXPORT_FAILURES],
            description="Export requests a destination did not take (each retry counts)")
        meter.create_observable_gauge(
            names.EXPORT_LEFT, [self._left], unit=UNITS[names.EXPORT_LEFT],
            description="Spans and log records produced and not taken: held for a retry, or in the audit")
        meter.create_observable_gauge(
            names.EXPORT_LAG_RECORDS, [self._lag_gauge(0)], unit=UNITS[names.EXPORT_LAG_RECORDS],
            description="Audit records written that the destination has not taken yet")
        meter.create_observable_gauge(
            names.EXPORT_LAG_TIME, [self._lag_gauge(1)], unit=UNITS[names.EXPORT_LAG_TIME],
            description="Newest audit record written minus the newest taken, in the trainer's time")
        self._duration = meter.create_histogram(
            names.EXPORT_DURATION, unit=UNITS[names.EXPORT_DURATION],
            description="Duration of one export request, taken or not",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S)
        self._lags: dict[str, tuple[int, float]] = {}

    def request_done(self, destination: str, signal: str, seconds: float) -> None:
        """One export request took ``seconds`` (``Destination.on_request``)."""
        self._duration.record(seconds, self._attributes(destination, signal))

    def collect(self) -> MetricsData | None:
        """Every series as it stands now (cumulative). Never raises: a failed collection costs itself."""
        self._lags = {}
        try:
            return self._reader.get_metrics_data()
        except Exception as error:  # noqa: BLE001 - the run's other metrics still go out
            report_internal_error("delivery metrics", error)
            return None

    # --- the instruments' callbacks ---------------------------------------------------------------

    def _attributes(self, destination: str, signal: str, **more: str) -> dict[str, Any]:
        return {**self._constant, names.EXPORT_DESTINATION: destination, names.EXPORT_SIGNAL: signal,
                **more}

    def _counts(self) -> Iterable[tuple[str, str, Any]]:
        for follower in self._followers:
            destination = follower.destination
            for signal, counts in destination.counts.items():
                if destination.takes(signal):
                    yield destination.name, signal, counts

    def _items(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(getattr(counts, outcome),
                            self._attributes(destination, signal, **{names.EXPORT_OUTCOME: outcome}))
                for destination, signal, counts in self._counts() for outcome in names.EXPORT_OUTCOMES]

    def _failures(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(counts.failed_attempts, self._attributes(destination, signal))
                for destination, signal, counts in self._counts()]

    def _left(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(left, self._attributes(follower.destination.name, signal))
                for follower in self._followers for signal, left in follower.left().items()]

    def _lag(self, follower: Follower) -> tuple[int, float]:
        """Once per collection and follower: both lag gauges read the same files."""
        name = follower.destination.name
        if name not in self._lags:
            self._lags[name] = follower.lag()
        return self._lags[name]

    def _lag_gauge(self, which: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """The callback of a lag gauge: ``which`` 0 the records behind, 1 the seconds."""
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(self._lag(f)[which],
                                {**self._constant, names.EXPORT_DESTINATION: f.destination.name})
                    for f in self._followers]

        return observe
