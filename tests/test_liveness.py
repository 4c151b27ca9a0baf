"""A run is visible while it runs: announced at once, liveness metrics, and spans cut short are marked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from lezea_otel import ExperimentTracker

from .otlp_receiver import HttpReceiver


class TestAnnouncement:
    def test_started_span_and_record_arrive_before_the_first_step_ends(self, monkeypatch, tmp_path):
        """Within seconds of start(), the collector has the started span and log record with the run's
        identity."""
        receiver = HttpReceiver()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        try:
            tracker = ExperimentTracker("visible", purpose="watch me", tags=["live"], runs_dir=tmp_path)
            tracker.start(prometheus_port=None)
            deadline = time.monotonic() + 3.0
            with tracker.builder_scope("0"):  # the "first step", still running
                while time.monotonic() < deadline and not (
                        receiver.received.spans() and receiver.received.log_records()):
                    time.sleep(0.05)
                spans = {s.name: s for s in receiver.received.spans()}
                started = [r for r in receiver.received.log_records()
                           if r.event_name == "lezea.experiment.started"]
            assert "experiment.started" in spans and started
            assert started[0].trace_id == spans["experiment.started"].trace_id
            attributes = {a.key: a.value.string_value for a in started[0].attributes}
            assert attributes["lezea.experiment.id"] == tracker.experiment_id
            assert attributes["lezea.experiment.purpose"] == "watch me"
            tracker.finalize_experiment()
        finally:
            receiver.stop()


class TestLivenessMetrics:
    def test_heartbeat_and_last_step_time(self, capture):
        """The heartbeat advances with every collection; the last step's time is exported for 'time since
        step'."""
        tracker = capture.tracker("alive", auto_start=True)
        before = time.time()
        tracker.log_training_step(1, {"loss": 0.5})
        (first,) = capture.points("lezea.run.heartbeat")
        time.sleep(0.05)
        (second,) = capture.points("lezea.run.heartbeat")
        assert second.value > first.value >= before and first.unit == "s"
        (last_step,) = capture.points("lezea.training.last_step.time")
        assert before <= last_step.value <= time.time()
        running = capture.points("lezea.run.state", lezea__run__status="running")
        assert running[0].value == 1
        tracker.finalize_experiment()


class TestTruncatedSpans:
    def test_finalize_inside_a_scope_marks_it_truncated(self, capture):
        """Finalizing while scopes are open ends them innermost first, marked truncated with the reason."""
        tracker = capture.tracker("cut", auto_start=True)
        with tracker.builder_scope("1"), tracker.span("forward"):
            tracker.log_training_step(1, {"loss": 0.5})
            tracker.finalize_experiment()
        spans = {s.name: s for s in capture.spans()}
        for name in ("builder", "forward"):
            assert spans[name].attributes["lezea.span.truncated"] is True
            assert spans[name].events[-1].name == "lezea.truncated"
            assert spans[name].events[-1].attributes["reason"] == "finalize_experiment"
        assert spans["forward"].end_time <= spans["builder"].end_time <= spans["experiment"].end_time
        assert len(capture.spans("builder")) == 1  # leaving the with-block later does not end it twice

    def test_sigterm_inside_a_scope(self, tmp_path):
        """SIGTERM during a long scope: the scope span is exported, truncated, with reason sigterm."""
        code = ("import os, signal, sys\nfrom lezea_otel import ExperimentTracker\n"
                "t = ExperimentTracker('term', runs_dir=sys.argv[1], quiet=True)\n"
                "t.start(prometheus_port=None)\n"
                "print(t.experiment_id, flush=True)\n"
                "with t.builder_scope('7'):\n    t.log_training_step(1, {'loss': 1.0})\n"
                "    os.kill(os.getpid(), signal.SIGTERM)\n")
        env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              timeout=60, env=env)
        assert proc.returncode == -15
        run_dir = tmp_path / proc.stdout.split()[0]
        spans = [span for line in (run_dir / "otlp" / "spans.jsonl").read_text().splitlines()
                 for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"]
                 for span in ss["spans"]]
        (builder,) = [s for s in spans if s["name"] == "builder"]
        attributes = {a["key"]: a["value"] for a in builder["attributes"]}
        assert attributes["lezea.span.truncated"] == {"boolValue": True}
        assert builder["events"][-1]["name"] == "lezea.truncated"
        ends = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
        assert any(e["kind"] == "scope_end" and e["data"].get("truncated") == "sigterm" for e in ends)


class TestProgress:
    def test_long_scope_gets_progress_markers(self, capture, monkeypatch):
        """A scope open past LEZEA_PROGRESS_AFTER gets ended marker spans with elapsed time and steps, while
        open."""
        monkeypatch.setenv("LEZEA_PROGRESS_AFTER", "0.2")
        monkeypatch.setenv("LEZEA_PROGRESS_EVERY", "0.2")
        tracker = capture.tracker("long", auto_start=True)
        with tracker.builder_scope("slow"):
            for step in range(1, 8):
                tracker.log_training_step(step, {"loss": 1.0 / step})
                time.sleep(0.1)
            markers = capture.spans("lezea.progress")  # exported while the scope is still open
            assert capture.spans("builder") == []
        with tracker.builder_scope("quick"):
            pass
        tracker.finalize_experiment()
        assert 1 <= len(markers) <= 4
        (builder, _quick) = capture.spans("builder")
        last = markers[-1]
        assert last.parent.span_id == builder.context.span_id
        assert last.attributes["lezea.progress.elapsed_s"] >= 0.2
        assert 1 <= last.attributes["lezea.progress.steps"] <= 7
        assert len(capture.spans("lezea.progress")) == len(markers)  # none for the quick scope


class TestCrashCause:
    def test_growing_memory_is_named_as_the_likely_cause(self, capture):
        """A crashed run whose memory kept growing is reported with that as its likely cause."""
        from lezea_otel.analysis.runs import load_run

        tracker = capture.tracker("oom", auto_start=True)
        for step, memory in enumerate((1000.0, 1800.0, 2600.0, 3400.0), start=1):
            tracker.log_training_step(step, {"loss": 1.0 / step})
            tracker.log_component_resources("trainer", "tasker", memory_mb=memory)
        tracker._session.pipeline.flush()
        lines = tracker.audit_path.read_text().splitlines()
        start = json.loads(lines[0])
        start["data"]["pid"] = 2**22 + 17  # a process that no longer exists: the run died
        (tracker.run_dir / "copy").mkdir()
        (tracker.run_dir / "copy" / "events.jsonl").write_text(
            "\n".join([json.dumps(start), *lines[1:]]) + "\n")
        run = load_run(tracker.run_dir / "copy")
        assert run.status == "crashed"
        (cause,) = [r for r in run.recommendations() if r["rule"] == "crashed"]
        assert "after step 4" in cause["message"]
        assert "memory kept growing (1000, 1800, 2600, 3400 MB)" in cause["message"]
        tracker.finalize_experiment()
