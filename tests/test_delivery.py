"""OTLP export to a real receiver (gRPC and HTTP), configured the standard OTel way."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lezea_otel import ExperimentTracker

from .otlp_receiver import GrpcReceiver, HttpReceiver


def closed_port() -> int:
    """A local port nobody listens on: a collector that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(params=["http/protobuf", "grpc"])
def receiver(request):
    server = HttpReceiver() if request.param == "http/protobuf" else GrpcReceiver()
    server.protocol = request.param
    yield server
    server.stop()


def _run(tracker: ExperimentTracker) -> None:
    tracker.start(prometheus_port=None)
    tracker.log_lezea_config(64, 4, "SAC")
    with tracker.builder_scope("42"):
        with tracker.span("forward"):
            tracker.log_training_step(1, {"loss": 0.5})
        tracker.log_comment("looks fine")
    tracker.finalize_experiment()


class TestOtlpExport:
    def test_all_signals_arrive_over_otlp_from_environment(self, receiver, monkeypatch, tmp_path):
        """OTEL_EXPORTER_OTLP_ENDPOINT + _PROTOCOL send spans with parentage, metric points and correlated logs."""
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
        """endpoint= and protocol= arguments work; OTEL_LOGS_EXPORTER=none keeps logs local."""
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
        tracker = ExperimentTracker("wire", runs_dir=tmp_path, endpoint=receiver.endpoint, protocol=receiver.protocol)
        _run(tracker)
        assert receiver.received.spans()
        assert receiver.received.metric_points("lezea.training.loss")
        assert receiver.received.requests["logs"] == []
        assert (tracker.run_dir / "otlp" / "logs.jsonl").stat().st_size > 0

    def test_local_mode_connects_nowhere(self, receiver, tmp_path):
        """With no endpoint configured nothing is sent, and the files still hold every signal."""
        tracker = ExperimentTracker("local", runs_dir=tmp_path)
        _run(tracker)
        assert receiver.received.requests == {"traces": [], "metrics": [], "logs": []}
        assert tracker.settings.otlp_signals == frozenset()
        for name in ("spans.jsonl", "metrics.jsonl", "logs.jsonl"):
            assert (tracker.run_dir / "otlp" / name).stat().st_size > 0


class TestCollectorDown:
    def test_finalize_is_bounded_and_files_are_complete(self, monkeypatch, tmp_path, caplog):
        """Collector unreachable: no exception, finalize within LEZEA_SHUTDOWN_TIMEOUT, local files whole."""
        import time

        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "1.5")
        tracker = ExperimentTracker("down", runs_dir=tmp_path)
        tracker.start(prometheus_port=None)
        for step in range(1, 51):
            with tracker.span("step"):
                tracker.log_training_step(step, {"loss": 1.0 / step})
        started = time.monotonic()
        summary = tracker.finalize_experiment()
        assert time.monotonic() - started < 3.0
        assert summary["steps"]["count"] == 50
        otlp = tracker.run_dir / "otlp"
        assert (otlp / "spans.jsonl").read_text().count('"name":"step"') == 50
        assert "lezea.training.loss" in (otlp / "metrics.jsonl").read_text()
        exporter_lines = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter.otlp")]
        assert len({r.name for r in exporter_lines}) == len(exporter_lines)  # at most one line per exporter


class TestSpoolAndReplay:
    def test_outage_is_spooled_reported_and_replayed_exactly_once(self, monkeypatch, tmp_path):
        """Collector down for the whole run: batches land in the spool, the report says so, and
        `lezea-otel replay` fills the receiver exactly once."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "10")
        tracker = ExperimentTracker("outage", runs_dir=tmp_path)
        tracker.start(prometheus_port=None)
        for step in range(1, 11):
            with tracker.span("step"):
                tracker.log_training_step(step, {"loss": 1.0 / step})
        tracker.log_comment("written during the outage")
        summary = tracker.finalize_experiment()
        delivery = summary["delivery"]
        assert delivery["mode"] == "otlp"
        spans = delivery["signals"]["traces"]
        assert spans["produced"] == 12 and spans["exported"] == 0 and spans["spooled"] == 12  # + experiment.started
        assert spans["dropped"] == 0 and delivery["signals"]["logs"]["spooled"] >= 3
        spooled = (tracker.run_dir / "spool" / "spans.jsonl").read_text().splitlines()
        assert sum(len(s["spans"]) for line in spooled for r in json.loads(line)["resourceSpans"]
                   for s in r["scopeSpans"]) == 12

        receiver = HttpReceiver()
        script = Path(sys.executable).parent / "lezea-otel"
        try:
            args = [str(script), "replay", str(tracker.run_dir), "--endpoint", receiver.endpoint]
            first = subprocess.run(args, capture_output=True, text=True, timeout=60)
            assert first.returncode == 0, first.stderr
            again = subprocess.run(args, capture_output=True, text=True, timeout=60)
            assert again.returncode == 0 and "Nothing to replay" in again.stdout
        finally:
            receiver.stop()
        got = receiver.received
        names = sorted(span.name for span in got.spans())
        assert names == sorted(["step"] * 10 + ["experiment", "experiment.started"])  # the gap, filled exactly once
        root = next(span for span in got.spans() if span.name == "experiment")
        spooled_root = next(span for line in spooled for r in json.loads(line)["resourceSpans"]
                            for s in r["scopeSpans"] for span in s["spans"] if span["name"] == "experiment")
        assert root.start_time_unix_nano == int(spooled_root["startTimeUnixNano"])  # original timestamps kept
        assert root.start_time_unix_nano <= summary_start(tracker)
        assert any(r.body.string_value == "written during the outage" for r in got.log_records())
        assert got.metric_points("lezea.training.loss")

    def test_replay_reports_unreachable_endpoint_and_corrupt_lines(self, tmp_path):
        """An unreachable endpoint is a clear error (exit 1); a corrupt line is skipped and named."""
        tracker = ExperimentTracker("record", runs_dir=tmp_path, quiet=True)
        tracker.start(prometheus_port=None)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        with open(tracker.run_dir / "otlp" / "logs.jsonl", "a") as handle:
            handle.write("{not json\n")
        script = Path(sys.executable).parent / "lezea-otel"
        down = subprocess.run([str(script), "replay", str(tracker.run_dir), "--all", "--endpoint",
                               "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
        assert down.returncode == 1 and "unreachable" in down.stderr
        receiver = HttpReceiver()
        try:
            up = subprocess.run([str(script), "replay", str(tracker.run_dir), "--all", "--endpoint",
                                 receiver.endpoint], capture_output=True, text=True, timeout=60)
        finally:
            receiver.stop()
        assert up.returncode == 0, up.stderr
        lines = (tracker.run_dir / "otlp" / "logs.jsonl").read_text().splitlines()
        assert f"logs.jsonl: line {len(lines)} is not a valid OTLP-JSON logs line" in up.stderr
        assert {s.name for s in receiver.received.spans()} == {"experiment", "experiment.started"}


def summary_start(tracker: ExperimentTracker) -> int:
    first = json.loads(tracker.audit_path.read_text().splitlines()[0])
    return int(first["time_unix_nano"])


class TestRefusingCollector:
    @pytest.mark.parametrize(("protocol", "refusal"), [
        ("http/protobuf", 503), ("http/protobuf", 429), ("http/protobuf", 400),
        ("grpc", "UNAVAILABLE"), ("grpc", "RESOURCE_EXHAUSTED"),
    ])
    def test_refused_batches_are_spooled_then_replayed(self, monkeypatch, tmp_path, protocol, refusal):
        """A collector that answers with an error never raises into training; every refused span is
        spooled and a later replay delivers it."""
        import grpc

        receiver = HttpReceiver() if protocol == "http/protobuf" else GrpcReceiver()
        receiver.refuse_with = refusal if protocol == "http/protobuf" else getattr(grpc.StatusCode, refusal)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
        try:
            tracker = ExperimentTracker("refused", runs_dir=tmp_path, endpoint=receiver.endpoint, protocol=protocol,
                                        quiet=True)
            tracker.start(prometheus_port=None)
            for step in range(1, 6):
                with tracker.span("step"):
                    tracker.log_training_step(step, {"loss": 1.0 / step})
            spans = tracker.finalize_experiment()["delivery"]["signals"]["traces"]
            assert spans["exported"] == 0 and spans["spooled"] == spans["produced"] == 7
            assert receiver.received.spans() == []
            receiver.refuse_with = None
            from lezea_otel._internal.replay import replay

            replay(tracker.run_dir, receiver.endpoint, protocol)
            assert sorted(s.name for s in receiver.received.spans()) == sorted(
                ["step"] * 5 + ["experiment", "experiment.started"])
        finally:
            receiver.stop()
