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
        _step_spans(tracker, 1, 50)
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
        `lezea-otel replay` fills the receiver exactly once, with the configured headers."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20replay-token")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "10")
        tracker = ExperimentTracker("outage", runs_dir=tmp_path)
        tracker.start(prometheus_port=None)
        _step_spans(tracker, 1, 10)
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
        assert all({k.lower(): v for k, v in h.items()}.get("authorization") == "Bearer replay-token"
                   for h in got.headers)

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
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
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


def _wait(condition, timeout_s: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _started(name: str, tmp_path, receiver, protocol: str = "http/protobuf") -> ExperimentTracker:
    tracker = ExperimentTracker(name, runs_dir=tmp_path, endpoint=receiver.endpoint, protocol=protocol, quiet=True)
    return tracker.start(prometheus_port=None)


def _traces(tracker: ExperimentTracker) -> dict:
    """The delivery report's span counts, mid-run or at the end."""
    return tracker.get_experiment_summary()["delivery"]["signals"]["traces"]


def _step_spans(tracker: ExperimentTracker, first: int, last: int) -> None:
    for step in range(first, last + 1):
        with tracker.span("step", step=step):
            tracker.log_training_step(step, {"loss": 1.0 / step})


def _hanging_collector(monkeypatch, tmp_path, delay_s: float, shutdown_s: float):
    """A receiver answering only after ``delay_s`` and a started tracker exporting to it."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30000")
    monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", str(shutdown_s))
    receiver = HttpReceiver()
    receiver.delay_s = delay_s
    tracker = ExperimentTracker("hanging", runs_dir=tmp_path, endpoint=receiver.endpoint, quiet=True)
    tracker.start(prometheus_port=None)
    return receiver, tracker


@pytest.fixture
def fast_export(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "100")


class TestCollectorOutageMidRun:
    @pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
    def test_killed_then_restarted_collector_gets_the_gap_while_the_run_lives(self, tmp_path, fast_export, protocol):
        """The collector dies mid-run and comes back: the spool fills during the outage and is
        resent by itself once the collector is back; every span arrives exactly once, nothing
        is left for replay, and the report says how many needed the retry."""
        receiver_type = HttpReceiver if protocol == "http/protobuf" else GrpcReceiver
        receiver = receiver_type()
        tracker = _started("restart", tmp_path, receiver, protocol)
        try:
            _step_spans(tracker, 1, 5)
            _wait(lambda: len([s for s in receiver.received.spans() if s.name == "step"]) == 5)
            receiver.stop()
            _step_spans(tracker, 6, 10)
            _wait(lambda: _traces(tracker)["spooled"] >= 5)
            receiver = receiver_type(port=receiver.port, received=receiver.received)
            _step_spans(tracker, 11, 15)
            _wait(lambda: _traces(tracker)["spooled"] == 0 and _traces(tracker)["exported"] >= 16)
            summary = tracker.finalize_experiment()
        finally:
            receiver.stop()
        spans = summary["delivery"]["signals"]["traces"]
        assert spans["retried"] >= 5 and spans["spooled"] == spans["dropped"] == 0
        assert spans["exported"] == spans["produced"]
        steps = [next(a.value.int_value for a in s.attributes if a.key == "step")
                 for s in receiver.received.spans() if s.name == "step"]
        assert sorted(steps) == list(range(1, 16))  # the gap filled, nothing twice
        from lezea_otel._internal.replay import pending_lines

        assert pending_lines(tracker.run_dir, receiver.endpoint, everything=False) == 0

    def test_slow_collector_never_makes_training_wait_and_finalize_is_bounded(self, monkeypatch, tmp_path,
                                                                                fast_export):
        """A collector that answers only after 10 s: calls return at once, finalize returns within
        LEZEA_SHUTDOWN_TIMEOUT, and what was still on the wire or queued is spooled, not lost."""
        import time

        slow, tracker = _hanging_collector(monkeypatch, tmp_path, delay_s=10.0, shutdown_s=2)
        slowest = 0.0
        for step in range(1, 41):
            began = time.perf_counter()
            with tracker.span("step", step=step):
                tracker.log_training_step(step, {"loss": 1.0 / step})
            slowest = max(slowest, time.perf_counter() - began)
            time.sleep(0.01)
        began = time.monotonic()
        summary = tracker.finalize_experiment()
        took = time.monotonic() - began
        slow.stop()
        assert slowest < 0.25 and took < 3.0
        spans = summary["delivery"]["signals"]["traces"]
        assert spans["produced"] == 42 and spans["dropped"] == 0  # 40 steps, experiment, experiment.started
        assert spans["exported"] + spans["spooled"] == 42
        fast = HttpReceiver()
        try:
            from lezea_otel._internal.replay import replay

            replay(tracker.run_dir, fast.endpoint)
        finally:
            fast.stop()
        replayed = {span.name for span in fast.received.spans()}
        assert "experiment" in replayed and "step" in replayed

    @pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
    def test_partial_success_neither_raises_nor_resends(self, tmp_path, fast_export, protocol):
        """OTLP partial success: the collector took the request and rejected some items for good.
        Resending them cannot help, so they are not spooled; the collector counts them
        (otelcol_receiver_refused_*), and training is untouched."""
        receiver = HttpReceiver() if protocol == "http/protobuf" else GrpcReceiver()
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
        assert spans["exported"] == spans["produced"] == 7 and spans["spooled"] == 0
        assert len(receiver.received.spans()) == 7
        assert not (tracker.run_dir / "spool" / "spans.jsonl").exists()


def test_a_stuck_exporter_spools_the_overflow_instead_of_dropping(monkeypatch, tmp_path, fast_export):
    """More spans than the queue holds while the collector hangs: the SDK's batch processor would
    drop them; here the caller spools the overflow and every span is accounted for."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32")
    hanging, tracker = _hanging_collector(monkeypatch, tmp_path, delay_s=5.0, shutdown_s=1)
    _step_spans(tracker, 1, 500)
    summary = tracker.finalize_experiment()
    hanging.stop()
    spans = summary["delivery"]["signals"]["traces"]
    assert spans["produced"] == 502 and spans["dropped"] == 0
    assert spans["spooled"] + spans["exported"] == 502
    spooled = [json.loads(line) for line in (tracker.run_dir / "spool" / "spans.jsonl").read_text().splitlines()]
    assert sum(len(s["spans"]) for line in spooled for r in line["resourceSpans"] for s in r["scopeSpans"]) \
        == spans["spooled"]


def test_replay_refuses_a_live_run(monkeypatch, tmp_path, fast_export):
    """While the run lives its retry thread owns the spool: `replay` says so and sends nothing."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    tracker = ExperimentTracker("live", runs_dir=tmp_path, quiet=True)
    tracker.start(prometheus_port=None)
    _step_spans(tracker, 1, 3)
    _wait(lambda: (tracker.run_dir / "spool" / "spans.jsonl").exists())
    receiver = HttpReceiver()
    try:
        script = Path(sys.executable).parent / "lezea-otel"
        live = subprocess.run([str(script), "replay", str(tracker.run_dir), "--endpoint", receiver.endpoint],
                              capture_output=True, text=True, timeout=60)
        assert live.returncode == 1 and "still live" in live.stderr
        assert receiver.received.spans() == []
        tracker.finalize_experiment()
        ended = subprocess.run([str(script), "replay", str(tracker.run_dir), "--endpoint", receiver.endpoint],
                               capture_output=True, text=True, timeout=60)
        assert ended.returncode == 0, ended.stderr
        assert sorted(s.name for s in receiver.received.spans()) == sorted(
            ["step"] * 3 + ["experiment", "experiment.started"])
    finally:
        receiver.stop()


def test_collector_down_with_default_settings_costs_finalize_about_a_second(monkeypatch, tmp_path):
    """Defaults (exporter timeout 10 s, LEZEA_SHUTDOWN_TIMEOUT 5 s), collector down from the start:
    finalize gives up on the export being retried after about a second, not at the bound, and the
    whole run is in the spool."""
    import time

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    tracker = ExperimentTracker("down-defaults", runs_dir=tmp_path, quiet=True)
    tracker.start(prometheus_port=None)
    _step_spans(tracker, 1, 5)
    began = time.monotonic()
    summary = tracker.finalize_experiment()
    assert time.monotonic() - began < 2.5
    for signal, counts in summary["delivery"]["signals"].items():
        assert counts["spooled"] == counts["produced"] > 0 and counts["dropped"] == 0, (signal, counts)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_batch_refused_for_good_is_set_aside_and_the_rest_goes_on(tmp_path, fast_export, protocol):
    """After an outage the collector refuses one batch for good (HTTP 400 / INVALID_ARGUMENT): the
    live retry sets it aside in spool/rejected/ and delivers the batches behind it; a replay to a
    collector that takes it delivers it later."""
    import grpc

    receiver = HttpReceiver() if protocol == "http/protobuf" else GrpcReceiver()
    receiver.refuse_with = 503 if protocol == "http/protobuf" else grpc.StatusCode.UNAVAILABLE
    tracker = _started("poison", tmp_path, receiver, protocol)
    try:
        _step_spans(tracker, 1, 3)
        _wait(lambda: _traces(tracker)["spooled"] >= 4)
        with tracker.span("poison"):
            pass
        _wait(lambda: _traces(tracker)["spooled"] >= 5)
        _step_spans(tracker, 4, 6)
        _wait(lambda: _traces(tracker)["spooled"] >= 8)
        receiver.poison, receiver.refuse_with = "poison", None
        _wait(lambda: _traces(tracker)["spooled"] == _traces(tracker)["rejected"] == 1)
        summary = tracker.finalize_experiment()
    finally:
        receiver.stop()
    spans = summary["delivery"]["signals"]["traces"]
    assert spans["rejected"] == spans["spooled"] == 1 and spans["dropped"] == 0
    assert spans["exported"] + spans["spooled"] == spans["produced"]
    names = [span.name for span in receiver.received.spans()]
    assert names.count("step") == 6 and "poison" not in names
    aside = (tracker.run_dir / "spool" / "rejected" / "spans.jsonl").read_text()
    assert '"poison"' in aside and '"step"' not in aside
    accepting = HttpReceiver()
    try:
        from lezea_otel._internal.replay import replay

        replay(tracker.run_dir, accepting.endpoint)
    finally:
        accepting.stop()
    assert "poison" in [span.name for span in accepting.received.spans()]


def _spans_in_file(path: Path, name: str) -> int:
    return sum(1 for line in path.read_text().splitlines() for r in json.loads(line)["resourceSpans"]
               for s in r["scopeSpans"] for span in s["spans"] if span["name"] == name)


class TestLocalFilesNeverDrop:
    @pytest.mark.parametrize("collector", [False, True], ids=["local", "otlp"])
    def test_every_phase_of_a_fast_async_run_is_in_spans_jsonl(self, monkeypatch, tmp_path, collector):
        """Phases ending faster than a file is written, with a queue far smaller than the run: the SDK's
        batch processor dropped over half of them ("Queue full, dropping Span"); now the caller writes
        the overflow itself, so every phase is in otlp/spans.jsonl and the delivery report adds up."""
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "256")
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")
        receiver = HttpReceiver() if collector else None
        try:
            tracker = ExperimentTracker("fast", runs_dir=tmp_path, async_mode=True, quiet=True,
                                        endpoint=receiver.endpoint if receiver else None)
            tracker.start(prometheus_port=None)
            for _ in range(3000):
                with tracker.span("phase"):
                    pass
            summary = tracker.finalize_experiment()
        finally:
            if receiver is not None:
                receiver.stop()
        assert summary["phases"]["phase"]["count"] == 3000
        assert _spans_in_file(tracker.run_dir / "otlp" / "spans.jsonl", "phase") == 3000
        assert _spans_in_file(tracker.run_dir / "otlp" / "spans.jsonl", "experiment") == 1
        if collector:
            spans = summary["delivery"]["signals"]["traces"]
            assert spans["produced"] == 3002 and spans["dropped"] == 0
            assert spans["exported"] + spans["spooled"] == spans["produced"]
            assert len(receiver.received.spans()) == spans["exported"]

    def test_a_file_that_cannot_be_written_is_counted_and_warned_once(self, tmp_path, lezea_warnings):
        """A disk that refuses the local OTLP file loses those items there (the audit has them): they
        are counted as dropped, produced == written + dropped, and one warning says so."""
        from lezea_otel._internal.otlp_json import FileWriter, LocalFiles
        from lezea_otel._internal.safety import Warnings

        class FullDisk:
            def export(self, batch):
                raise OSError(28, "No space left on device")

        warnings = Warnings()
        files = LocalFiles(tmp_path / "otlp", warnings.warn)
        writer = FileWriter(files, "traces", FullDisk())
        assert writer.export(["a", "b"]) is False and writer.keep_batch(["c"]) is False
        assert files.report()["traces"] == {"produced": 3, "written": 0, "dropped": 3}
        messages = lezea_warnings()
        assert len(messages) == 1 and "spans.jsonl could not be written" in messages[0]
