"""The exporter's /metrics: what the official ``PrometheusMetricReader`` exposes for the same data.

The dashboards query the official reader's names; ``LatestMetrics`` is fed ``MetricsData`` instead of
pulling a MeterProvider, so parity is checked by recording the same instruments on two providers, one
read by the official reader and one by an ``InMemoryMetricReader`` whose data is pushed in.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Buckets as ExpBuckets
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from lezea_otel import semconv as names
from lezea_otel.exporter import AuditCursor, RunConverter
from lezea_otel.exporter.prometheus import LatestMetrics, serve

RESOURCE = Resource({"service.name": "lezea", "lezea.experiment.id": "exp-1", "1st.key": 3, "flag": True})
SCOPE = InstrumentationScope("lezea_otel", "0.1.0")


def _record(provider: MeterProvider) -> None:
    """Every kind of instrument, with the names, units, attributes and values the dashboards meet."""
    meter = provider.get_meter("lezea_otel", "0.1.0", schema_url="https://opentelemetry.io/schemas/1.26.0",
                               attributes={"scope.kind": "trainer"})
    other = provider.get_meter("lezea_otel.observers")  # no version: otel_scope_version=""
    attributes = {"lezea.experiment.id": "exp-1", "lezea.scope": "builder:42", "lezea.data_split": "train"}
    loss = meter.create_gauge("lezea.training.loss", description="Training value 'loss'")
    loss.set(0.25, attributes)
    loss.set(0.5, {**attributes, "lezea.data_split": "val"})
    loss.set(1.0, {"lezea.experiment.id": "exp-1"})  # fewer attributes: the others become ""
    meter.create_gauge("lezea.x-y__z/w", unit="m/s").set(2, {"0bad.key": 1, "list": [1, 2], "b": False})
    meter.create_counter("lezea.checkpoints", unit="{checkpoint}",
                         description="Checkpoints").add(2, attributes)
    meter.create_counter("lezea.checkpoint.size", unit="By").add(2048, attributes)
    meter.create_counter("requests_total", unit="MiBy").add(1)
    meter.create_up_down_counter("lezea.queue.depth", unit="{record}").add(-3, attributes)
    meter.create_gauge("lezea.gpu.utilization", unit="1").set(0.75, {"hw.id": "gpu0"})
    meter.create_gauge("lezea.cpu.share", unit="%").set(12.5)
    phase = meter.create_histogram("lezea.phase.duration", unit="s", description="Duration of user phases",
                                   explicit_bucket_boundaries_advisory=[0.001, 0.1, 1.0, 10.0])
    for value in (0.0005, 0.05, 0.5, 0.5, 50.0):
        phase.record(value, {**attributes, "lezea.phase.name": "forward"})
    phase.record(2.0, {**attributes, "lezea.phase.name": "backward"})

    def memory(_options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(1 << 30, {"process.pid": 7})

    def cpu_time(_options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(3.5, {"cpu.mode": "user"})

    other.create_observable_gauge("process.memory.usage", [memory], unit="By")
    other.create_observable_counter("process.cpu.time", [cpu_time], unit="s")
    other.create_observable_up_down_counter("process.thread.count", [lambda _o: [Observation(4)]],
                                            unit="{thread}")


def _official(generate: Callable[[CollectorRegistry], bytes] = generate_latest) -> str:
    """The official reader's exposition of ``_record``, with the one departure ours makes: the gauge of
    unit ``1`` is named ``_ratio``, as Prometheus's OTLP translation names it (OpenMetrics: with its UNIT)."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    _record(provider)
    try:
        text = generate(registry).decode()
    finally:
        provider.shutdown()
    text = text.replace("lezea_gpu_utilization", "lezea_gpu_utilization_ratio")
    unit_line = "# TYPE lezea_gpu_utilization_ratio gauge\n"
    if "# EOF" in text:  # OpenMetrics states the unit
        text = text.replace(unit_line, unit_line + "# UNIT lezea_gpu_utilization_ratio ratio\n")
    return text


def _ours() -> tuple[LatestMetrics, CollectorRegistry, MetricsData]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    _record(provider)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    latest = LatestMetrics()
    latest.update("observers", data)
    registry = CollectorRegistry()
    registry.register(latest)
    return latest, registry, data


def _families(text: str) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], Any]]]]:
    """name -> (type, help, samples), each sample (name, labels, value) with NaN made comparable."""
    out = {}
    for family in text_string_to_metric_families(text):
        samples = [(s.name, s.labels, "NaN" if math.isnan(s.value) else s.value) for s in family.samples]
        out[family.name] = (family.type, family.documentation, samples)
    return out


def _metric(name: str, data: Any, unit: str = "", description: str = "") -> Metric:
    return Metric(name, description, unit, data)


def _data(*metrics: Metric, resource: Resource = RESOURCE,
          scope: InstrumentationScope = SCOPE) -> MetricsData:
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, list(metrics), "")], "")])


def _gauge(name: str, value: float, **attributes: Any) -> Metric:
    return _metric(name, Gauge([NumberDataPoint(attributes, 0, 1, value)]))


def _text(latest: LatestMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(latest)
    return generate_latest(registry).decode()


class TestParityWithTheOfficialReader:
    def test_the_exposition_is_the_official_one_byte_for_byte(self) -> None:
        """Names, unit suffixes, _total, up-down sums as gauges, buckets, labels, scope labels, target_info,
        non-finite values and their order: the same text as the official reader's for the same data."""
        official = _official()
        _latest, registry, _data = _ours()
        ours = generate_latest(registry).decode()
        assert _families(ours) == _families(official)
        assert ours == official

    def test_the_openmetrics_exposition_is_the_official_one(self) -> None:
        """The OpenMetrics form (UNIT lines, counter and info suffixes) matches too."""
        official = _official(generate_openmetrics)
        assert generate_openmetrics(_ours()[1]).decode() == official  # type: ignore[no-untyped-call]

    def test_the_names_the_dashboards_query_are_there(self) -> None:
        """Spot checks of the rules, so a failure says which: suffixes, sanitising, scope labels."""
        families = _families(generate_latest(_ours()[1]).decode())
        assert families["lezea_phase_duration_seconds"][0] == "histogram"
        assert families["lezea_checkpoints"][0] == "counter"  # {checkpoint} adds nothing; exposed _total
        assert "lezea_checkpoint_size_bytes" in families and "requests_mebibytes" in families
        assert families["lezea_queue_depth"][0] == "gauge"  # a non-monotonic sum
        assert "lezea_gpu_utilization_ratio" in families and "lezea_cpu_share_percent" in families
        assert "lezea_x_y_z_w_meters_per_second" in families
        ((_name, labels, value),) = families["process_memory_usage_bytes"][2]
        assert value == 1 << 30 and labels == {"process_pid": "7", "otel_scope_name": "lezea_otel.observers",
                                               "otel_scope_version": "", "otel_scope_schema_url": ""}
        ((_name, info, _one),) = families["target_info"][2]
        assert info == {"service_name": "lezea", "lezea_experiment_id": "exp-1", "_st_key": "3",
                        "flag": "true"}
        loss = {s[1]["lezea_data_split"]: s for s in families["lezea_training_loss"][2]}
        assert loss["train"][1]["otel_scope_scope_kind"] == "trainer" and loss[""][2] == 1.0

    def test_what_the_sdk_refuses_is_named_and_written_by_the_same_rules(self) -> None:
        """Hand-built data may hold what no SDK instrument records: a leading digit, runs of odd characters,
        non-finite values (written as Prometheus writes them) and a unit annotation around a unit."""
        latest = LatestMetrics()
        odd = Gauge([NumberDataPoint({"which": tag}, 0, 1, value)
                     for tag, value in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf))])
        latest.update("records", _data(_metric("9lives..a$b", odd, unit="{x}/s"),
                                       _metric("t", Sum([NumberDataPoint({}, 0, 1, math.inf)],
                                                        AggregationTemporality.CUMULATIVE, True),
                                               unit="{a}s")))
        text = _text(latest)
        assert 'lives_a_b_per_second{otel_scope_name="lezea_otel",otel_scope_schema_url="",' in text
        assert 'otel_scope_version="0.1.0",which="nan"} NaN' in text
        assert 'which="inf"} +Inf' in text and 'which="-inf"} -Inf' in text
        assert 't_seconds_total{' in text and "} +Inf" in text.split("t_seconds_total{")[1]

    def test_no_timestamps_and_no_exemplars(self) -> None:
        """Prometheus would apply no staleness to timestamped samples; exemplars are not exposed."""
        exemplar_point = HistogramDataPoint({}, 0, 5_000_000_000, 1, 0.5, [0, 1], [0.1], 0.5, 0.5)
        latest = LatestMetrics()
        latest.update("records", _data(
            _metric("h", Histogram([exemplar_point], AggregationTemporality.CUMULATIVE)), _gauge("g", 1.0)))
        for family in text_string_to_metric_families(_text(latest)):
            assert all(s.timestamp is None and s.exemplar is None for s in family.samples)
        assert 'h_bucket{le="0.1",otel_scope_name="lezea_otel"' in _text(latest)


class TestSources:
    def test_update_replaces_a_sources_data(self) -> None:
        """The whole state each time: a series gone from the data is gone from /metrics."""
        latest = LatestMetrics()
        latest.update("observers", _data(_gauge("a", 1.0), _gauge("b", 2.0)))
        latest.update("observers", _data(_gauge("a", 3.0)))
        families = _families(_text(latest))
        assert families["a"][2][0][2] == 3.0 and "b" not in families
        latest.update("observers", None)
        assert _text(latest) == ""

    def test_merge_keeps_the_series_that_did_not_change(self) -> None:
        """``merge=True`` takes what ``MetricsBuilder.collect()`` returns: only changed series."""
        latest = LatestMetrics()
        latest.update("records", _data(_gauge("loss", 1.0, split="train"), _gauge("step", 1.0)), merge=True)
        latest.update("records", _data(_gauge("loss", 0.5, split="train")), merge=True)
        latest.update("records", None, merge=True)  # nothing changed
        families = _families(_text(latest))
        assert families["loss"][2][0][2] == 0.5 and families["step"][2][0][2] == 1.0
        assert len(families["loss"][2]) == 1

    def test_two_sources_of_one_resource_and_scope_merge_into_one_family(self) -> None:
        """One HELP/TYPE per name (Prometheus refuses a second TYPE line), one target_info sample, the
        labels the union of both sources' with "" for the missing ones."""
        latest = LatestMetrics()
        latest.update("records", _data(_gauge("x", 1.0, run="a"), _gauge("only.records", 1.0)))
        latest.update("observers", _data(_gauge("x", 2.0, pid=7)))
        text = _text(latest)
        assert text.count("# TYPE x gauge") == 1 and text.count("# TYPE target_info") == 1
        samples = _families(text)["x"][2]
        assert [(s[1]["run"], s[1]["pid"], s[2]) for s in samples] == [("a", "", 1.0), ("", "7", 2.0)]
        assert len(_families(text)["target_info"][2]) == 1

    def test_one_target_info_sample_per_distinct_resource(self) -> None:
        latest = LatestMetrics()
        latest.update("a", _data(_gauge("x", 1.0), resource=Resource({"lezea.experiment.id": "r1"})))
        latest.update("b", _data(_gauge("x", 2.0), resource=Resource({"lezea.experiment.id": "r2"})))
        latest.update("c", _data(_gauge("y", 2.0), resource=Resource({"lezea.experiment.id": "r2"})))
        targets = _families(_text(latest))["target_info"][2]
        assert sorted(s[1]["lezea_experiment_id"] for s in targets) == ["r1", "r2"]

    def test_the_same_series_from_two_sources_is_exposed_once_the_last_wins(self) -> None:
        latest = LatestMetrics()
        latest.update("first", _data(_gauge("x", 1.0, k="v")))
        latest.update("second", _data(_gauge("x", 2.0, k="v")))
        assert [s[2] for s in _families(_text(latest))["x"][2]] == [2.0]

    def test_a_metric_with_no_prometheus_form_is_left_out_with_one_warning(
            self, caplog: pytest.LogCaptureFixture) -> None:
        """An exponential histogram is skipped (as the official reader does); the rest is scraped."""
        point = ExponentialHistogramDataPoint({}, 0, 1, 1, 1.0, 0, 0, ExpBuckets(0, [1]), ExpBuckets(0, []),
                                              0, 1.0, 1.0)
        exponential = _metric("exp", ExponentialHistogram([point], AggregationTemporality.CUMULATIVE))
        latest = LatestMetrics()
        with caplog.at_level(logging.WARNING, logger="lezea_otel"):
            latest.update("records", _data(exponential, _gauge("fine", 1.0)))
            latest.update("records", _data(exponential, _gauge("fine", 1.0)))
        assert set(_families(_text(latest))) == {"target_info", "fine"}
        assert [r.getMessage() for r in caplog.records].count(
            "Metric 'exp' is left out of /metrics: its data type ExponentialHistogram has no Prometheus "
            "form") == 1

    def test_updates_and_scrapes_from_many_threads(self) -> None:
        """Each scrape sees one complete update of a source, never a half-written one."""
        latest = LatestMetrics()
        errors: list[BaseException] = []

        def write(source: str) -> None:
            for i in range(200):
                latest.update(source, _data(_gauge("a", float(i)), _gauge("b", float(i))))

        def scrape() -> None:
            try:
                for _ in range(50):
                    families = _families(_text(latest))
                    if "a" in families:
                        assert [s[2] for s in families["a"][2]] == [s[2] for s in families["b"][2]]
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=write, args=("s",)), threading.Thread(target=scrape)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not errors


@pytest.fixture
def served() -> Iterator[tuple[LatestMetrics, int]]:
    latest = LatestMetrics()
    server, thread = serve(0, "127.0.0.1", latest)
    yield latest, server.server_port
    server.shutdown()
    server.server_close()
    thread.join(5)


class TestServe:
    def test_a_real_run_is_scraped_over_http(self, capture: Any, served: tuple[LatestMetrics, int]) -> None:
        """The exporter's metrics of a tracker run, from its audit, on /metrics of 127.0.0.1, by experiment
        id, with the run's resource as target_info."""
        tracker = capture.tracker("prom", auto_start=True)
        with tracker.builder_scope("42"), tracker.span("forward"):
            tracker.log_training_step(1, {"loss": 0.5}, data_split="train")
        tracker.finalize_experiment()
        converter = RunConverter()
        cursor = AuditCursor(tracker.audit_path)
        while records := cursor.read(final=True):
            converter.feed(records)
        latest, port = served
        latest.update("records", converter.collect(), merge=True)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        families = _families(body)
        (loss,) = families["lezea_training_loss"][2]
        assert loss[2] == 0.5 and loss[1]["lezea_experiment_id"] == tracker.experiment_id
        assert loss[1]["lezea_scope"] == "builder:42" and loss[1]["lezea_data_split"] == "train"
        assert "lezea_phase_duration_seconds_bucket" in body and "lezea_run_start_time_seconds" in families
        ((_name, info, _one),) = families["target_info"][2]
        assert info[names.EXPERIMENT_ID.replace(".", "_")] == tracker.experiment_id

    def test_extra_collectors_are_scraped_too(self) -> None:
        class Clock:
            scrapes = 0

            def describe(self) -> list[Any]:
                return []

            def collect(self) -> list[Any]:
                Clock.scrapes += 1
                return []

        latest = LatestMetrics()
        server, thread = serve(0, "127.0.0.1", latest, extra=[Clock()])
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).read()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
        assert Clock.scrapes == 1

    def test_a_busy_port_raises_oserror(self) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            with pytest.raises(OSError):
                serve(busy.getsockname()[1], "127.0.0.1", LatestMetrics())
