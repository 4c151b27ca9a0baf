"""Delivery to a collector through the exporter beside the trainer: real OTLP receivers (gRPC and HTTP),
configured the standard OTel way; the audit is the spool, ``lezea-otel export`` sends what is left.

Every test runs with the exporter the environment selects (``LEZEA_EXPORTER=thread``, or ``process``,
the default). The follower's policies (backoff, a batch refused for good, a batch delivered in part)
are also driven directly, on a fake clock.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from lezea_otel import ExperimentTracker
from lezea_otel.cli import main as cli
from lezea_otel.config.settings import resolve_settings
from lezea_otel.exporter.assemble import otlp_destination
from lezea_otel.exporter.follow import MAX_BACKOFF_S, REFUSED_FOR_GOOD_AFTER, Destination, Follower
from lezea_otel.exporter.offline import export_run

from .otlp_receiver import GrpcReceiver, HttpReceiver

PROTOCOLS = ["http/protobuf", "grpc"]


def closed_port() -> int:
    """A local port nobody listens on: a collector that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def receiver_for(protocol: str, port: int = 0, received: Any = None) -> Any:
    return (HttpReceiver if protocol == "http/protobuf" else GrpcReceiver)(port=port, received=received)


@pytest.fixture(params=PROTOCOLS)
def receiver(request):
    server = receiver_for(request.param)
    server.protocol = request.param
    yield server
    server.stop()


@pytest.fixture
def fast_export(monkeypatch):
    """Exports give up within 300 ms (the SDK exporters' own retries stay out of the way)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")


class DeadCollector:
    """A collector that crashes on every request: connections are accepted and closed at once; counted,
    so a test knows the exporter tried while it was down."""

    def __init__(self, port: int) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(16)
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def stop(self) -> None:
        self._socket.close()
        self._thread.join(5)


def _wait(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _exporter_up(tracker: ExperimentTracker) -> None:
    """The exporter (a process takes a moment to start) wrote its first local batch: timings measured
    after this are the delivery's, not the interpreter's start."""
    spans = tracker.run_dir / "otlp" / "spans.jsonl"
    _wait(lambda: spans.exists() and spans.stat().st_size > 0)


def _run(tracker: ExperimentTracker) -> None:
    tracker.start(prometheus_port=None)
    tracker.log_lezea_config(64, 4, "SAC")
    with tracker.builder_scope("42"):
        with tracker.span("forward"):
            tracker.log_training_step(1, {"loss": 0.5})
        tracker.log_comment("looks fine")
    tracker.finalize_experiment()


def _step_spans(tracker: ExperimentTracker, first: int, last: int) -> None:
    for step in range(first, last + 1):
        with tracker.span("step", step=step):
            tracker.log_training_step(step, {"loss": 1.0 / step})


def _steps(received: Any) -> list[int]:
    """The ``step`` attribute of each step span, in the order the collector got them."""
    return [next(a.value.int_value for a in s.attributes if a.key == "step")
            for s in received.spans() if s.name == "step"]


def _first_batch_in(received: Any) -> bool:
    """Steps 1-5 with their logs and metrics arrived: nothing of the first batch is still on the wire."""
    return (len(_steps(received)) == 5 and bool(received.requests["logs"])
            and bool(received.requests["metrics"]))


def _first_record_ns(tracker: ExperimentTracker) -> int:
    return int(json.loads(tracker.audit_path.read_text().splitlines()[0])["time_unix_nano"])


def _exporter_log_lines(tracker: ExperimentTracker, caplog) -> list[str]:
    """The OTLP exporters' log lines: the trainer's own (thread) or the exporter process's log file."""
    if os.environ.get("LEZEA_EXPORTER") == "thread":
        return [r.name for r in caplog.records if r.name.startswith("opentelemetry.exporter.otlp")]
    log = (tracker.run_dir / "exporter" / "exporter.log").read_text().splitlines()
    return [line.split()[2] for line in log if len(line.split()) > 2 and line.split()[2].startswith(
        "opentelemetry.exporter.otlp")]


def scraped(port: int, sample: str, destination: str, signal: str | None = None,
            outcome: str | None = None) -> float:
    """The value of one delivery metric sample on a run's /metrics, for a destination (and a signal and an
    outcome); NaN when it is not there (yet: the exporter process serves /metrics once it runs)."""
    wanted = {"lezea_export_destination": destination}
    wanted |= {"lezea_export_signal": signal} if signal else {}
    wanted |= {"lezea_export_outcome": outcome} if outcome else {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except urllib.error.URLError:
        return math.nan
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and wanted.items() <= found.labels.items():
                return float(found.value)
    return math.nan


def _export(*args: str) -> Any:
    """``lezea-otel`` in this process (the real command, without an interpreter start)."""
    return CliRunner().invoke(cli, list(args))


class TestOtlpExport:
    def test_all_signals_arrive_over_otlp_from_environment(self, receiver, monkeypatch, tmp_path):
        """OTEL_EXPORTER_OTLP_ENDPOINT + _PROTOCOL send spans with parentage, metric points and correlated
        logs."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", receiver.protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=ml%20platform")
        tracker = ExperimentTracker("wire", runs_dir=tmp_path)
        _run(tracker)
        got = receiver.received

        spans = {span.name: span for span in got.spans()}
        assert set(spans) == {"experiment", "experiment.started", "builder", "forward"}
        assert spans["builder"].parent_span_id == spans["experiment"].span_id
        assert spans["forward"].parent_span_id == spans["builder"].span_id
        assert len({span.trace_id for span in spans.values()}) == 1

        points = got.metric_points("lezea.training.loss")
        assert points and points[-1][1] == 0.5
        assert points[-1][0]["lezea.scope"] == "builder:42"
        assert points[-1][0]["lezea.experiment.id"] == tracker.experiment_id

        comment = next(r for r in got.log_records() if r.event_name == "lezea.comment")
        assert comment.body.string_value == "looks fine"
        assert comment.trace_id == spans["builder"].trace_id and comment.span_id == spans["builder"].span_id

        resource = got.resources("traces")[0]
        assert resource["service.name"] == "lezea"
        assert resource["lezea.experiment.id"] == tracker.experiment_id
        assert any(h.get("x-team") == "ml platform" for h in got.headers)

    def test_endpoint_argument_and_per_signal_off(self, receiver, monkeypatch, tmp_path):
        """endpoint= and protocol= arguments work; OTEL_LOGS_EXPORTER=none keeps logs local, and the
        report does not claim the collector got any."""
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
        tracker = ExperimentTracker("wire", runs_dir=tmp_path, endpoint=receiver.endpoint,
                                    protocol=receiver.protocol)
        _run(tracker)
        assert receiver.received.spans()
        assert receiver.received.metric_points("lezea.training.loss")
        assert receiver.received.requests["logs"] == []
        assert (tracker.run_dir / "otlp" / "logs.jsonl").stat().st_size > 0
        delivery = tracker.get_experiment_summary()["delivery"]
        assert set(delivery["signals"]) == {"traces", "metrics"} and delivery["files"]["logs"]["exported"] > 0

    def test_local_mode_connects_nowhere(self, receiver, tmp_path):
        """With no endpoint configured nothing is sent, and the files still hold every signal."""
        tracker = ExperimentTracker("local", runs_dir=tmp_path)
        _run(tracker)
        assert receiver.received.requests == {"traces": [], "metrics": [], "logs": []}
        assert tracker.settings.otlp_signals == frozenset()
        assert tracker.get_experiment_summary()["delivery"]["mode"] == "local"
        for name in ("spans.jsonl", "metrics.jsonl", "logs.jsonl"):
            assert (tracker.run_dir / "otlp" / name).stat().st_size > 0


class TestCollectorDown:
    def test_finalize_is_bounded_and_files_are_complete(self, monkeypatch, tmp_path, caplog):
        """Collector unreachable: no exception, finalize within LEZEA_SHUTDOWN_TIMEOUT, local files whole,
        and the exporters' complaints are one line each, not one per retry."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "1.5")
        tracker = ExperimentTracker("down", runs_dir=tmp_path)
        tracker.start(prometheus_port=None)
        _exporter_up(tracker)
        _step_spans(tracker, 1, 50)
        started = time.monotonic()
        summary = tracker.finalize_experiment()
        assert time.monotonic() - started < 2.5
        assert summary["steps"]["count"] == 50
        otlp = tracker.run_dir / "otlp"
        assert (otlp / "spans.jsonl").read_text().count('"name":"step"') == 50
        assert "lezea.training.loss" in (otlp / "metrics.jsonl").read_text()
        assert summary["delivery"]["files"]["traces"] == {"produced": 52, "exported": 52, "dropped": 0,
                                                         "rejected": 0, "left_in_audit": 0,
                                                         "failed_attempts": 0}
        lines = _exporter_log_lines(tracker, caplog)
        assert len(set(lines)) == len(lines)  # at most one line per exporter

    def test_collector_down_with_default_settings_costs_finalize_about_a_second(self, monkeypatch, tmp_path):
        """Defaults (exporter timeout 10 s, LEZEA_SHUTDOWN_TIMEOUT 5 s), collector down from the start:
        finalize gives up on it after about a second, not at the bound, and the report says the whole
        run is left in the audit for `lezea-otel export`."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        tracker = ExperimentTracker("down-defaults", runs_dir=tmp_path, quiet=True)
        tracker.start(prometheus_port=None)
        _exporter_up(tracker)
        _step_spans(tracker, 1, 5)
        began = time.monotonic()
        summary = tracker.finalize_experiment()
        assert time.monotonic() - began < 2.0
        signals = summary["delivery"]["signals"]
        for signal in ("traces", "logs"):
            counts = signals[signal]
            assert counts["left_in_audit"] == counts["produced"] > 0 and counts["exported"] == 0, (
                signal, counts)
            assert counts["dropped"] == counts["rejected"] == 0
        assert signals["traces"]["produced"] == 7  # 5 steps, experiment, experiment.started
        assert signals["metrics"]["left_in_audit"] == 1 and signals["metrics"]["exported"] == 0


class TestOutageAndExport:
    @pytest.fixture(autouse=True)
    def _no_finish_window(self, monkeypatch):
        """``lezea-otel export`` after the run: no exporter process goes on after finalize (its window is
        0), so what the collector did not take waits in the audit (TestFinishInBackground: the window)."""
        monkeypatch.setenv("LEZEA_FINISH_WINDOW", "0")

    def test_outage_is_reported_and_exported_exactly_once(self, monkeypatch, tmp_path):
        """Collector down for the whole run: the report says what was left in the audit, and
        `lezea-otel export` fills the collector once it is back, exactly once, with the original
        timestamps and the configured headers; a second run (`replay`, the alias) sends nothing."""
        port = closed_port()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20export-token")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
        tracker = ExperimentTracker("outage", runs_dir=tmp_path)
        tracker.start(prometheus_port=None)
        _step_spans(tracker, 1, 10)
        tracker.log_comment("written during the outage")
        summary = tracker.finalize_experiment()
        delivery = summary["delivery"]
        assert delivery["mode"] == "otlp"
        spans = delivery["signals"]["traces"]
        assert spans["produced"] == spans["left_in_audit"] == 12  # + experiment.started
        assert spans["exported"] == 0
        assert spans["dropped"] == 0 and delivery["signals"]["logs"]["left_in_audit"] >= 3

        receiver = HttpReceiver(port=port)  # the collector is back where it was
        script = Path(sys.executable).parent / "lezea-otel"
        try:
            first = subprocess.run([str(script), "export", str(tracker.run_dir)], capture_output=True,
                                   text=True, timeout=60, check=False)
            assert first.returncode == 0, first.stderr
            again = _export("replay", str(tracker.run_dir))
            assert again.exit_code == 0 and "Nothing to replay" in again.stdout, again.output
        finally:
            receiver.stop()
        got = receiver.received
        names = sorted(span.name for span in got.spans())
        assert names == sorted(["step"] * 10 + ["experiment", "experiment.started"])  # the gap, filled once
        assert _steps(got) == list(range(1, 11))
        root = next(span for span in got.spans() if span.name == "experiment")
        assert root.start_time_unix_nano == _first_record_ns(tracker)  # original timestamps kept
        assert any(r.body.string_value == "written during the outage" for r in got.log_records())
        assert got.metric_points("lezea.training.loss")
        assert all({k.lower(): v for k, v in h.items()}.get("authorization") == "Bearer export-token"
                   for h in got.headers)

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_a_collector_back_after_the_run_gets_only_the_gap(self, tmp_path, fast_export, protocol):
        """The collector takes the first steps, dies for the rest of the run, and is back afterwards:
        `export` sends only what it missed (the live exporter's acknowledgements are export's too)."""
        receiver = receiver_for(protocol)
        tracker = ExperimentTracker("gap", runs_dir=tmp_path, endpoint=receiver.endpoint, protocol=protocol,
                                    quiet=True).start(prometheus_port=None)
        try:
            _step_spans(tracker, 1, 5)
            _wait(lambda: _first_batch_in(receiver.received))
            receiver.stop()
            _step_spans(tracker, 6, 10)
            summary = tracker.finalize_experiment()
            assert summary["delivery"]["signals"]["traces"]["left_in_audit"] == 6  # steps 6-10, experiment
            receiver = receiver_for(protocol, port=receiver.port, received=receiver.received)
            result = _export("export", str(tracker.run_dir), "--endpoint", receiver.endpoint,
                             "--protocol", protocol)
            assert result.exit_code == 0, result.output
        finally:
            receiver.stop()
        assert _steps(receiver.received) == list(range(1, 11))  # each once, in order
        assert sorted(s.name for s in receiver.received.spans() if s.name != "step") == \
            ["experiment", "experiment.started"]

    def test_export_reports_an_unreachable_endpoint_a_missing_one_and_corrupt_lines(self, monkeypatch,
                                                                                     tmp_path):
        """An unreachable endpoint is a clear error (exit 1), none at all a usage error (exit 2); a corrupt
        audit line is skipped and named, the rest is sent."""
        monkeypatch.setenv("LEZEA_EXPORTER", "none")  # audit only: export sends it all
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
        tracker = ExperimentTracker("record", runs_dir=tmp_path, quiet=True)
        tracker.start(prometheus_port=None)
        _step_spans(tracker, 1, 3)
        tracker.finalize_experiment()
        lines = tracker.audit_path.read_text().splitlines(keepends=True)
        tracker.audit_path.write_text("".join([*lines[:3], "{not json\n", *lines[3:]]))
        down = _export("export", str(tracker.run_dir), "--endpoint", f"http://127.0.0.1:{closed_port()}")
        assert down.exit_code == 1 and "unreachable" in down.stderr
        nowhere = _export("export", str(tracker.run_dir))
        assert nowhere.exit_code == 2 and "no OTLP endpoint" in nowhere.stderr
        receiver = HttpReceiver()
        try:
            up = _export("replay", str(tracker.run_dir), "--all", "--endpoint", receiver.endpoint)
        finally:
            receiver.stop()
        assert up.exit_code == 0, up.output
        assert "not a record (torn or corrupt); skipped" in up.stderr
        assert sorted(s.name for s in receiver.received.spans()) == ["experiment", "experiment.started",
                                                                    "step", "step", "step"]

    def test_export_refuses_a_live_run(self, monkeypatch, tmp_path, fast_export):
        """While the run lives its own exporter delivers it: `export` says so and sends nothing."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        tracker = ExperimentTracker("live", runs_dir=tmp_path, quiet=True)
        tracker.start(prometheus_port=None)
        _step_spans(tracker, 1, 3)
        receiver = HttpReceiver()
        try:
            live = _export("export", str(tracker.run_dir), "--endpoint", receiver.endpoint)
            assert live.exit_code == 1 and "still live" in live.stderr
            assert receiver.received.requests == {"traces": [], "metrics": [], "logs": []}
            tracker.finalize_experiment()
            ended = _export("export", str(tracker.run_dir), "--endpoint", receiver.endpoint)
            assert ended.exit_code == 0, ended.output
        finally:
            receiver.stop()
        assert sorted(s.name for s in receiver.received.spans()) == sorted(
            ["step"] * 3 + ["experiment", "experiment.started"])


class TestRefusingCollector:
    @pytest.mark.parametrize(("protocol", "refusal"), [
        ("http/protobuf", 503), ("http/protobuf", 429), ("http/protobuf", 400),
        ("grpc", "UNAVAILABLE"), ("grpc", "RESOURCE_EXHAUSTED"),
    ])
    def test_refused_batches_are_held_then_exported(self, tmp_path, fast_export, protocol, refusal):
        """A collector that answers every request with an error never raises into training; every
        refused span is held, left in the audit (nothing rejected: it refuses everything), and a later
        export delivers it."""
        receiver = receiver_for(protocol)
        receiver.refuse_with = refusal if protocol == "http/protobuf" else getattr(grpc.StatusCode, refusal)
        try:
            tracker = ExperimentTracker("refused", runs_dir=tmp_path, endpoint=receiver.endpoint,
                                        protocol=protocol, quiet=True)
            tracker.start(prometheus_port=None)
            _step_spans(tracker, 1, 5)
            spans = tracker.finalize_experiment()["delivery"]["signals"]["traces"]
            assert spans["exported"] == 0 and spans["left_in_audit"] == spans["produced"] == 7
            assert spans["failed_attempts"] >= 1 and spans["rejected"] == spans["dropped"] == 0
            assert receiver.received.spans() == []
            receiver.refuse_with = None
            settings = resolve_settings({"endpoint": receiver.endpoint, "protocol": protocol})
            sent = export_run(tracker.run_dir, settings, crashed=False).sent
            assert sent["traces"] == 7
            assert sorted(s.name for s in receiver.received.spans()) == sorted(
                ["step"] * 5 + ["experiment", "experiment.started"])
        finally:
            receiver.stop()

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_partial_success_neither_raises_nor_resends(self, tmp_path, fast_export, protocol):
        """OTLP partial success: the collector took the request and rejected some items for good.
        Resending them cannot help, so they are not held; the collector counts them
        (otelcol_receiver_refused_*), and training is untouched."""
        receiver = receiver_for(protocol)
        receiver.partial_reject = 1
        try:
            tracker = ExperimentTracker("partial", runs_dir=tmp_path, endpoint=receiver.endpoint,
                                        protocol=protocol, quiet=True)
            tracker.start(prometheus_port=None)
            _step_spans(tracker, 1, 5)
            summary = tracker.finalize_experiment()
        finally:
            receiver.stop()
        spans = summary["delivery"]["signals"]["traces"]
        assert spans["exported"] == spans["produced"] == 7 and spans["left_in_audit"] == 0
        assert len(receiver.received.spans()) == 7


class TestCollectorOutageMidRun:
    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_killed_then_restarted_collector_gets_the_gap_while_the_run_lives(self, tmp_path, fast_export,
                                                                              protocol):
        """The collector dies mid-run and comes back: the follower holds what it could not deliver,
        retries with backoff, and once the collector is back sends the gap by itself, in order, with
        the original timestamps; every span arrives exactly once, nothing is left for export."""
        receiver = receiver_for(protocol)
        tracker = ExperimentTracker("restart", runs_dir=tmp_path, endpoint=receiver.endpoint,
                                    protocol=protocol, quiet=True).start(prometheus_port=None)
        dead = None
        try:
            _step_spans(tracker, 1, 5)
            _wait(lambda: _first_batch_in(receiver.received))
            receiver.stop()
            dead = DeadCollector(receiver.port)
            _step_spans(tracker, 6, 10)
            _wait(lambda: dead.connections >= 1)  # the exporter tried while it was down
            dead.stop()
            back_ns = time.time_ns()
            receiver = receiver_for(protocol, port=receiver.port, received=receiver.received)
            _step_spans(tracker, 11, 15)
            _wait(lambda: len(_steps(receiver.received)) == 15)
            summary = tracker.finalize_experiment()
        finally:
            receiver.stop()
            if dead is not None:
                dead.stop()
        assert _steps(receiver.received) == list(range(1, 16))  # the gap filled, in order, nothing twice
        gap = [s for s in receiver.received.spans() if s.name == "step" and
               next(a.value.int_value for a in s.attributes if a.key == "step") in range(6, 11)]
        assert all(s.end_time_unix_nano < back_ns for s in gap)  # the time they ran, not when they arrived
        spans = summary["delivery"]["signals"]["traces"]
        assert spans["exported"] == spans["produced"] == 17 and spans["left_in_audit"] == 0
        assert spans["failed_attempts"] >= 1  # the report says the retry was needed (spans go first)
        settings = resolve_settings({"endpoint": receiver.endpoint, "protocol": protocol})
        assert export_run(tracker.run_dir, settings, crashed=False).sent == {}  # nothing left for export

    def test_the_delivery_report_is_live_on_metrics_while_the_collector_is_down(self, tmp_path, fast_export):
        """The run's /metrics says what the report says at the end, while it happens: a collector that is
        down shows as failed requests, spans left to deliver and the otlp destination falling behind the
        audit (the local files keep up); once it is back, the gap is delivered and the lag and the items
        left drain to zero."""
        port, metrics_port = closed_port(), closed_port()
        tracker = ExperimentTracker("live-report", runs_dir=tmp_path, endpoint=f"http://127.0.0.1:{port}",
                                    protocol="http/protobuf", quiet=True).start(prometheus_port=metrics_port)
        receiver = None
        try:
            _step_spans(tracker, 1, 10)
            _wait(lambda: scraped(metrics_port, "lezea_export_failures_total", "otlp", "traces") >= 1)
            _wait(lambda: scraped(metrics_port, "lezea_export_lag_time_seconds", "otlp") > 0)
            assert scraped(metrics_port, "lezea_export_left", "otlp", "traces") > 0
            assert scraped(metrics_port, "lezea_export_lag_records", "otlp") > 0
            _wait(lambda: scraped(metrics_port, "lezea_export_lag_records", "local") == 0)
            assert scraped(metrics_port, "lezea_export_left", "local", "traces") == 0
            assert scraped(metrics_port, "lezea_export_items_total", "otlp", "traces", "exported") == 0

            receiver = receiver_for("http/protobuf", port=port)
            _wait(lambda: len(_steps(receiver.received)) == 10, timeout_s=40)  # the backoff ends
            _wait(lambda: scraped(metrics_port, "lezea_export_lag_records", "otlp") == 0)
            assert scraped(metrics_port, "lezea_export_lag_time_seconds", "otlp") == 0
            assert scraped(metrics_port, "lezea_export_left", "otlp", "traces") == 0
            exported = scraped(metrics_port, "lezea_export_items_total", "otlp", "traces", "exported")
            assert exported == scraped(metrics_port, "lezea_export_items_total", "otlp", "traces", "produced")
            assert exported == len(receiver.received.spans())
            assert scraped(metrics_port, "lezea_export_duration_seconds_count", "otlp", "traces") >= 2
            tracker.finalize_experiment()
        finally:
            if receiver is not None:
                receiver.stop()

    def test_slow_collector_never_makes_training_wait_and_finalize_is_bounded(self, monkeypatch, tmp_path):
        """A collector that answers only after 3 s: calls return at once, finalize returns within
        LEZEA_SHUTDOWN_TIMEOUT, and what it had not acknowledged is left in the audit, not lost."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30000")
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "1.5")
        slow = GrpcReceiver()
        slow.delay_s = 3.0
        tracker = ExperimentTracker("hanging", runs_dir=tmp_path, endpoint=slow.endpoint, protocol="grpc",
                                    quiet=True)
        tracker.start(prometheus_port=None)
        _exporter_up(tracker)
        slowest = 0.0
        try:
            for step in range(1, 41):
                began = time.perf_counter()
                with tracker.span("step", step=step):
                    tracker.log_training_step(step, {"loss": 1.0 / step})
                slowest = max(slowest, time.perf_counter() - began)
            began = time.monotonic()
            summary = tracker.finalize_experiment()
            took = time.monotonic() - began
        finally:
            slow.stop()
        assert slowest < 0.05 and took < 1.5 + 0.3, took
        spans = summary["delivery"]["signals"]["traces"]
        assert spans["produced"] == 42 and spans["dropped"] == 0  # 40 steps, experiment, experiment.started
        assert spans["exported"] + spans["left_in_audit"] == 42 and spans["left_in_audit"] > 0
        fast = GrpcReceiver()
        try:
            export_run(tracker.run_dir, resolve_settings({"endpoint": fast.endpoint, "protocol": "grpc"}),
                       crashed=False)
        finally:
            fast.stop()
        assert _steps(fast.received) == list(range(1, 41))


BOUNDED_FINALIZE = """
import json, sys, time
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("bounded", runs_dir=sys.argv[1], quiet=True).start(prometheus_port=None)
for _ in range(int(sys.argv[2])):
    with tracker.span("forward"):
        pass
tracker.log_training_step(1, {"loss": 0.5})
began = time.monotonic()
tracker.finalize_experiment()
print(json.dumps({"run_dir": str(tracker.run_dir), "finalize_s": time.monotonic() - began}), flush=True)
"""


def _bounded_run(tmp_path: Path, phases: int, **env: str) -> tuple[dict[str, Any], str]:
    """A training process whose finalize is bounded to 0.5 s, run to its exit: (what it printed, stderr)."""
    kept = {k: v for k, v in os.environ.items() if k not in ("LEZEA_RAISE_INTERNAL", "LEZEA_FINISH_WINDOW")}
    child_env = kept | {
        "LEZEA_EXPORTER": "process", "LEZEA_SHUTDOWN_TIMEOUT": "0.5", "LEZEA_QUIET": "1"} | env
    done = subprocess.run([sys.executable, "-c", BOUNDED_FINALIZE, str(tmp_path / "runs"), str(phases)],
                          capture_output=True, text=True, timeout=120, env=child_env, check=True)
    return json.loads(done.stdout), done.stderr


def _shown(run_dir: str) -> str:
    shown = _export("show", run_dir)
    assert shown.exit_code == 0, shown.output
    return str(shown.output)


class TestFinishInBackground:
    def test_a_finalize_bounded_to_half_a_second_returns_and_the_exporter_completes_the_files(self, tmp_path):
        """20,000 phases, then a finalize bounded to 0.5 s: the call returns within its bound (it says the
        files are still being written, and by whom), the training process exits, and the exporter process
        completes the run's span file by itself; ``show`` then reports the files whole."""
        printed, stderr = _bounded_run(tmp_path, 20_000)
        assert printed["finalize_s"] < 0.5 + 0.3
        spans = Path(printed["run_dir"]) / "otlp" / "spans.jsonl"
        _wait(lambda: spans.exists() and spans.read_text().count('"name":"forward"') == 20_000, timeout_s=60)
        _wait(lambda: "still delivering" not in _shown(printed["run_dir"]))
        shown = _shown(printed["run_dir"])
        assert "delivered to the files: traces 20002 of 20002" in shown and "left in the audit" not in shown
        if "finalize:" in stderr:  # on a fast machine the files may be whole in time: no warning at all
            assert "the run's files are not complete yet" in stderr and "in the background" in stderr, stderr
            assert "collector" not in stderr, stderr  # local mode: there is none to speak of

    def test_a_collector_down_at_finalize_gets_the_run_from_the_exporter_after_the_trainer_exits(
            self, tmp_path, fast_export):
        """The collector is down when the run ends: finalize returns within its bound, saying the collector
        has not taken the run and the exporter goes on retrying it; the collector comes back after the
        training process exited and gets the whole run with no user action; ``show`` says so."""
        port = closed_port()
        printed, stderr = _bounded_run(tmp_path, 10, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                                       OTEL_EXPORTER_OTLP_TIMEOUT="300")
        assert printed["finalize_s"] < 0.5 + 0.3
        assert "the collector has not taken the whole run" in stderr and "in the background" in stderr, stderr
        assert "the exporter is still delivering in the background" in _shown(printed["run_dir"])
        refused = _export("export", printed["run_dir"], "--endpoint", f"http://127.0.0.1:{port}")
        assert refused.exit_code == 1 and "still delivers it in the background" in refused.output  # no twice
        receiver = receiver_for("http/protobuf", port=port)
        try:
            _wait(lambda: "still delivering" not in _shown(printed["run_dir"]), timeout_s=60)
        finally:
            receiver.stop()
        names_received = sorted(span.name for span in receiver.received.spans())
        assert names_received == sorted(["experiment", "experiment.started"] + ["forward"] * 10)
        shown = _shown(printed["run_dir"])
        assert "delivered to the collector: traces 12 of 12" in shown and "left in the audit" not in shown


def test_every_phase_of_a_fast_async_run_is_in_spans_jsonl_and_the_collector_report_adds_up(tmp_path):
    """Phases ending faster than a file is written: every one is in otlp/spans.jsonl (the local files
    never drop), and what the collector took plus what is left adds up to what the run produced."""
    receiver = HttpReceiver()
    try:
        tracker = ExperimentTracker("fast", runs_dir=tmp_path, async_mode=True, quiet=True,
                                    endpoint=receiver.endpoint)
        tracker.start(prometheus_port=None)
        for _ in range(3000):
            with tracker.span("phase"):
                pass
        summary = tracker.finalize_experiment()
    finally:
        receiver.stop()
    assert summary["phases"]["phase"]["count"] == 3000
    spans_file = (tracker.run_dir / "otlp" / "spans.jsonl").read_text()
    assert spans_file.count('"name":"phase"') == 3000 and spans_file.count('"name":"experiment"') == 1
    assert summary["delivery"]["files"]["traces"]["exported"] == 3002
    spans = summary["delivery"]["signals"]["traces"]
    assert spans["produced"] == 3002 and spans["dropped"] == spans["rejected"] == 0
    assert spans["exported"] + spans["left_in_audit"] == 3002
    assert len(receiver.received.spans()) == spans["exported"]


# --- the follower's policies, on a fake clock --------------------------------------------------------

def _audit_only_run(monkeypatch, tmp_path: Path, poison: bool = False) -> Path:
    """A finished run recorded with no exporter (the audit only): steps 1-3, [a ``poison`` phase,] 4-6."""
    monkeypatch.setenv("LEZEA_EXPORTER", "none")
    tracker = ExperimentTracker("audit", runs_dir=tmp_path, quiet=True)
    tracker.start(prometheus_port=None)
    _step_spans(tracker, 1, 3)
    if poison:
        with tracker.span("poison"):
            pass
    _step_spans(tracker, 4, 6)
    tracker.finalize_experiment()
    return tracker.run_dir


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _no_warning(call: str, problem: str, detail: str) -> None:
    raise AssertionError(f"{call}: {problem}: {detail}")


def _collector_follower(run_dir: Path, receiver: Any, protocol: str, clock: FakeClock) -> Follower:
    destination, _described = otlp_destination(resolve_settings({"endpoint": receiver.endpoint,
                                                                 "protocol": protocol}), _no_warning)
    assert destination is not None
    return Follower(run_dir, destination, state_dir=run_dir / "exporter", metric_interval_s=3600.0,
                    clock=clock)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batch_refused_for_good_is_split_and_the_refused_span_rejected(monkeypatch, tmp_path, fast_export,
                                                                          protocol):
    """The collector takes data but refuses any request with one span (HTTP 400 / INVALID_ARGUMENT): the
    batch is retried with backoff, never sooner; after REFUSED_FOR_GOOD_AFTER refusals it is sent in
    halves, everything but that span arrives exactly once, the span is counted ``rejected`` and named in
    the problems, and what follows goes on."""
    run_dir = _audit_only_run(monkeypatch, tmp_path, poison=True)
    receiver = receiver_for(protocol)
    receiver.poison = "poison"
    clock = FakeClock()
    try:
        follower = _collector_follower(run_dir, receiver, protocol, clock)
        follower.poll()
        for _refusal in range(1, REFUSED_FOR_GOOD_AFTER):
            assert follower.failing and follower.refused
            assert receiver.received.spans() == []
            requests = len(receiver.received.requests["traces"])
            clock.now += 0.1
            assert not follower.poll()  # within its backoff: nothing is sent
            assert len(receiver.received.requests["traces"]) == requests
            clock.now += MAX_BACKOFF_S
            follower.poll()
        assert not follower.failing and follower.ended
        follower.finish(crashed=False)
    finally:
        receiver.stop()
    names = [span.name for span in receiver.received.spans()]
    assert sorted(names) == sorted(["step"] * 6 + ["experiment", "experiment.started"])  # once each
    report = follower.report()
    assert report["signals"]["traces"]["rejected"] == 1
    assert any("refused 1 span(s) for good" in problem for problem in report["problems"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_collector_refusing_everything_is_waited_for_with_backoff_never_rejected(monkeypatch, tmp_path,
                                                                                    fast_export, protocol):
    """Twenty minutes of 503 / UNAVAILABLE: the held batch is offered at most every MAX_BACKOFF_S (no
    spinning), nothing is rejected, and the first attempt after the collector recovers delivers the run."""
    run_dir = _audit_only_run(monkeypatch, tmp_path)
    receiver = receiver_for(protocol)
    receiver.refuse_with = 503 if protocol == "http/protobuf" else grpc.StatusCode.UNAVAILABLE
    clock = FakeClock()
    try:
        follower = _collector_follower(run_dir, receiver, protocol, clock)
        for _tick in range(600):
            follower.poll()
            clock.now += 2.0
        counts = follower.destination.counts["traces"]
        assert follower.failing and not follower.refused
        assert counts.rejected == counts.exported == 0
        assert 1200 / MAX_BACKOFF_S - 5 <= counts.failed_attempts <= 1200 / MAX_BACKOFF_S + 10
        receiver.refuse_with = None
        clock.now += MAX_BACKOFF_S
        follower.poll()
        follower.finish(crashed=False)
    finally:
        receiver.stop()
    assert not follower.failing and _steps(receiver.received) == list(range(1, 7))
    assert counts.exported == counts.produced == 8


def test_export_skips_a_span_refused_for_good_and_export_all_resends_it(monkeypatch, tmp_path, fast_export):
    """`lezea-otel export` to a collector that refuses one span for good sends the rest, says what it
    skipped, and exits 0; `--all` to a collector that takes it sends the whole run again."""
    run_dir = _audit_only_run(monkeypatch, tmp_path, poison=True)
    picky = HttpReceiver()
    picky.poison = "poison"
    try:
        result = _export("export", str(run_dir), "--endpoint", picky.endpoint)
    finally:
        picky.stop()
    assert result.exit_code == 0, result.output
    assert "refused for good by the collector: traces 1" in result.stderr
    assert _steps(picky.received) == list(range(1, 7))
    assert "poison" not in [s.name for s in picky.received.spans()]
    accepting = HttpReceiver()
    try:
        again = _export("export", str(run_dir), "--endpoint", accepting.endpoint, "--all")
    finally:
        accepting.stop()
    assert again.exit_code == 0, again.output
    assert "poison" in [span.name for span in accepting.received.spans()]


def test_a_local_file_that_cannot_be_written_is_counted_and_told_once(monkeypatch, tmp_path):
    """A disk that refuses the local OTLP file loses those items there (the audit has them): they are
    counted as dropped, produced == exported + dropped, the follower goes on, and it is told once."""
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter

    class FullDisk:
        closed = False

        def write(self, _text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            pass

    run_dir = _audit_only_run(monkeypatch, tmp_path)
    told: list[tuple[str, int]] = []
    destination = Destination("local", [FileSpanExporter(stream=FullDisk())],
                              on_drop=lambda *drop: told.append(drop))
    follower = Follower(run_dir, destination, state_dir=None, metric_interval_s=3600.0)
    follower.poll()
    follower.finish(crashed=False)
    traces = follower.report()["signals"]["traces"]
    assert traces["produced"] == traces["dropped"] == 8 and traces["exported"] == 0
    assert follower.ended and not follower.failing
    assert told == [("traces", traces["produced"])]


def test_spans_taken_while_their_logs_were_refused_are_not_sent_again_after_a_restart(monkeypatch, tmp_path):
    """The collector took a batch's spans and died before its logs: the cursor stays (the logs are still
    to deliver), and a restarted follower (a new exporter process, `lezea-otel export`) sends those logs
    and what follows, but not those spans again."""
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class DeadLogs(InMemoryLogRecordExporter):
        def export(self, batch):
            return LogRecordExportResult.FAILURE

    run_dir = _audit_only_run(monkeypatch, tmp_path)
    state = run_dir / "exporter"
    first_spans = InMemorySpanExporter()
    first = Follower(run_dir, Destination("otlp", [first_spans], [DeadLogs()], retry=True, key="c"),
                     state_dir=state, metric_interval_s=3600.0)
    first.poll()
    assert first.failing and len(first_spans.get_finished_spans()) == 8
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    again = Follower(run_dir, Destination("otlp", [spans], [logs], retry=True, key="c"), state_dir=state,
                     metric_interval_s=3600.0)
    again.poll()
    again.finish(crashed=False)
    assert spans.get_finished_spans() == () and len(logs.get_finished_logs()) > 0
    assert again.ended and not again.failing
    third = InMemorySpanExporter()
    done = Follower(run_dir, Destination("otlp", [third], [InMemoryLogRecordExporter()], retry=True, key="c"),
                    state_dir=state, metric_interval_s=3600.0)
    done.poll()
    assert third.get_finished_spans() == ()  # committed: nothing is left
