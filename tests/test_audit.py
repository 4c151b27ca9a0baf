"""The audit (runs/<id>/events.jsonl) and the OTLP-JSON-lines files next to it."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto_json.logs.v1.logs import LogsData
from opentelemetry.proto_json.metrics.v1.metrics import MetricsData
from opentelemetry.proto_json.trace.v1.trace import TracesData

from lezea_otel import ExperimentTracker
from lezea_otel.testing import Capture

FIELDS = {"seq", "time", "kind", "step", "scope", "trace_id", "span_id", "data"}


def read_audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def attributes(pairs: list[Any]) -> dict[str, Any]:
    """An OTLP KeyValue list as a plain dict of string/int/double/bool values."""
    out = {}
    for pair in pairs:
        value = pair.value
        for field in ("string_value", "int_value", "double_value", "bool_value"):
            if getattr(value, field) is not None:
                out[pair.key] = getattr(value, field)
                break
    return out


@pytest.fixture(autouse=True)
def _no_default_prometheus_port(monkeypatch):
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")


class TestEventsFile:
    def test_one_line_per_call_in_call_order(self, capture):
        """Each tracker call is one JSON line, in the order of the calls, with every field."""
        tracker = capture.tracker("order", auto_start=True)
        tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr": 3e-4})
        tracker.log_training_step(1, {"loss": 0.9})
        with tracker.builder_scope("42"):
            tracker.log_training_step(2, {"loss": 0.8}, data_split="val")
        tracker.log_reward("t0", 0.7)
        tracker.log_comment("done")
        tracker.finalize_experiment()
        events = read_audit(tracker.audit_path)
        assert [e["kind"] for e in events] == [
            "experiment_start", "environment", "config", "training_step", "scope_start", "training_step",
            "scope_end", "reward", "comment", "resource_totals", "experiment_end"]
        assert all(set(e) >= FIELDS for e in events)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        times = [datetime.fromisoformat(e["time"]) for e in events]
        assert all(t.tzinfo is not None and t.utcoffset().total_seconds() == 0 for t in times)
        assert times == sorted(times)
        assert abs(times[0] - datetime.now(timezone.utc)).total_seconds() < 120
        steps = [e for e in events if e["kind"] == "training_step"]
        assert [(e["step"], e["scope"]) for e in steps] == [(1, ""), (2, "builder:42")]
        assert steps[0]["data"] == {"metrics": {"loss": 0.9}}
        assert steps[1]["data"] == {"metrics": {"builder:42/loss": 0.8}, "data_split": "val"}
        assert events[2]["data"]["algorithm_type"] == "SAC"
        assert events[-1]["data"]["status"] == "finished"

    def test_trace_and_span_ids_match_the_spans(self, capture):
        """trace_id/span_id in the audit are those of the experiment span and of the scope's span."""
        tracker = capture.tracker("ids", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.9})
        with tracker.tasker_scope("A"):
            tracker.log_training_step(2, {"loss": 0.8})
        tracker.finalize_experiment()
        root = capture.spans("experiment")[0].context
        scope = capture.spans("tasker")[0].context
        outside, inside = [e for e in read_audit(tracker.audit_path) if e["kind"] == "training_step"]
        assert re.fullmatch(r"[0-9a-f]{32}", outside["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", outside["span_id"])
        assert (outside["trace_id"], outside["span_id"]) == (f"{root.trace_id:032x}", f"{root.span_id:016x}")
        assert (inside["trace_id"], inside["span_id"]) == (f"{root.trace_id:032x}", f"{scope.span_id:016x}")

    @pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async"])
    def test_four_threads_never_tear_lines(self, capture, async_mode):
        """4 threads logging at once: every line parses, seq strictly increases, nothing lost or reordered."""
        tracker = capture.tracker("threads", auto_start=True, async_mode=async_mode)
        per_thread = 1000
        barrier = threading.Barrier(4)

        def work(worker: int) -> None:
            barrier.wait()
            for step in range(per_thread):
                tracker.log_training_step(step, {f"w{worker}": float(step)}, data_split=f"w{worker}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        summary = tracker.finalize_experiment()
        raw = tracker.audit_path.read_bytes()
        assert raw.endswith(b"\n")
        events = read_audit(tracker.audit_path)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        for worker in range(4):
            own = [e["step"] for e in events
                   if e["kind"] == "training_step" and e["data"]["data_split"] == f"w{worker}"]
            assert own == list(range(per_thread))
        # each thread logs its own split: split calls, not training steps, and none lost
        assert summary["steps"]["count"] == 0
        assert summary["steps"]["splits"] == {f"w{worker}": per_thread for worker in range(4)}

    def test_lezea_runs_dir_is_honoured(self, monkeypatch, tmp_path):
        """LEZEA_RUNS_DIR decides where runs/<id>/events.jsonl goes."""
        monkeypatch.setenv("LEZEA_RUNS_DIR", str(tmp_path / "elsewhere"))
        tracker = ExperimentTracker("env-dir", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        path = tmp_path / "elsewhere" / tracker.experiment_id / "events.jsonl"
        assert tracker.audit_path == path
        assert [e["kind"] for e in read_audit(path)].count("training_step") == 1
        assert not (tmp_path / "runs").exists()

    def test_audit_exists_from_construction(self, capture):
        """The audit file exists as soon as the tracker is created, under runs/<experiment_id>/."""
        tracker = capture.tracker("early")
        assert tracker.audit_path.is_file()
        assert tracker.audit_path.parent.name == tracker.experiment_id
        tracker.finalize_experiment()


class TestOtlpFiles:
    def test_files_parse_as_otlp_json_with_the_experiment(self, capture):
        """otlp/spans.jsonl, metrics.jsonl and logs.jsonl are OTLP JSON carrying the experiment id."""
        tracker = capture.tracker("files", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.5})
        with tracker.builder_scope("7"):
            tracker.log_training_step(2, {"loss": 0.25})
        tracker.log_comment("a comment")
        tracker.finalize_experiment()
        folder = tracker.run_dir / "otlp"
        expected = {"spans.jsonl": ("resourceSpans", TracesData),
                    "metrics.jsonl": ("resourceMetrics", MetricsData),
                    "logs.jsonl": ("resourceLogs", LogsData)}
        decoded: dict[str, list[Any]] = {}
        for name, (key, message) in expected.items():
            lines = (folder / name).read_text().splitlines()
            assert lines, name
            for line in lines:
                assert list(json.loads(line)) == [key]
            decoded[name] = [message.from_json(line) for line in lines]
        for data in decoded["spans.jsonl"]:
            for rs in data.resource_spans:
                assert attributes(rs.resource.attributes)["lezea.experiment.id"] == tracker.experiment_id
        spans = [s for d in decoded["spans.jsonl"] for rs in d.resource_spans
                 for ss in rs.scope_spans for s in ss.spans]
        assert {s.name for s in spans} >= {"experiment", "builder"}
        audit_trace = read_audit(tracker.audit_path)[0]["trace_id"]
        assert {s.trace_id.hex() for s in spans} == {audit_trace}
        metrics = {m.name: m for d in decoded["metrics.jsonl"] for rm in d.resource_metrics
                   for sm in rm.scope_metrics for m in sm.metrics}
        assert "lezea.training.loss" in metrics
        loss_points = metrics["lezea.training.loss"].gauge.data_points
        experiments = {attributes(p.attributes)["lezea.experiment.id"] for p in loss_points}
        assert experiments == {tracker.experiment_id}
        assert {p.as_double for p in loss_points} == {0.5, 0.25}
        for data in decoded["metrics.jsonl"]:
            for rm in data.resource_metrics:
                assert attributes(rm.resource.attributes)["lezea.experiment.id"] == tracker.experiment_id
        records = [r for d in decoded["logs.jsonl"] for rl in d.resource_logs for sl in rl.scope_logs
                   for r in sl.log_records]
        assert {"lezea.experiment.started", "lezea.comment", "lezea.experiment.finished"} <= {
            r.event_name for r in records}
        assert all(attributes(r.attributes)["lezea.experiment.id"] == tracker.experiment_id for r in records)


class TestReadingBack:
    def test_torn_last_line_is_reported_and_the_rest_returned(self, capture):
        """A half-written last line (a crash) is named in "problems"; every complete event is returned."""
        tracker = capture.tracker("torn", auto_start=True)
        for step in range(1, 6):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        tracker.finalize_experiment()
        complete = read_audit(tracker.audit_path)
        with open(tracker.audit_path, "ab") as handle:
            handle.write(b'{"seq": 999, "kind": "training_st')
        data = tracker.get_experiment_data()
        assert len(data["problems"]) == 1
        assert f"line {len(complete) + 1}" in data["problems"][0]
        assert [e["seq"] for e in data["events"]] == [e["seq"] for e in complete]
        assert [v for _, v in data["metrics"]["loss"]] == [1.0, 0.5, 1 / 3, 0.25, 0.2]

    def test_clean_file_has_no_problems(self, capture):
        """An intact audit reads back with an empty problem list and the full history."""
        tracker = capture.tracker("clean", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.5}, data_split="train")
        data = tracker.get_experiment_data()
        tracker.finalize_experiment()
        assert data["problems"] == []
        assert data["metrics"] == {"train/loss": [[1, 0.5]]}
        assert data["experiment_id"] == tracker.experiment_id


class TestAsyncMode:
    @staticmethod
    def _run(tracker: ExperimentTracker) -> dict[str, Any]:
        tracker.log_lezea_config(8, 2, "PPO")
        for step in range(1, 201):
            with tracker.builder_scope(str(step % 3)):
                tracker.log_training_step(step, {"loss": 1.0 / step, "acc": step / 200})
        tracker.log_reward("t0", 0.5, step=200)
        tracker.log_conclusion("fine")
        return tracker.finalize_experiment()

    def test_async_records_the_same_lines_in_order(self, capture, tmp_path):
        """async_mode=True writes the same audit lines, in the same order, and the same summary."""
        sync_tracker = capture.tracker("sync", auto_start=True)
        async_tracker = Capture(tmp_path / "async-runs").tracker("async", auto_start=True, async_mode=True)
        sync_summary = self._run(sync_tracker)
        async_summary = self._run(async_tracker)

        def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            return [(e["seq"], e["kind"], e["step"], e["scope"],
                     e["data"].get("metrics") if e["kind"] == "training_step" else None) for e in events]

        assert shape(read_audit(async_tracker.audit_path)) == shape(read_audit(sync_tracker.audit_path))
        assert async_summary["steps"] == sync_summary["steps"] == {"count": 200, "first": 1, "last": 200,
                                                                        "splits": {"train": 200}}
        assert async_summary["metrics"].keys() == sync_summary["metrics"].keys()
        for key, stats in sync_summary["metrics"].items():
            assert async_summary["metrics"][key]["last"] == stats["last"]
            assert async_summary["metrics"][key]["count"] == stats["count"]
        assert async_summary["conclusion"] == "fine" and async_summary["status"] == "finished"

    def test_summary_before_finalize_sees_queued_calls(self, capture):
        """In async mode get_experiment_summary() includes every call made before it."""
        tracker = capture.tracker("async-summary", auto_start=True, async_mode=True)
        for step in range(1, 501):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        assert tracker.get_experiment_summary()["steps"]["count"] == 500
        tracker.finalize_experiment()


class TestDurability:
    def test_a_quiet_run_still_has_at_most_a_second_at_risk(self, capture):
        """One step and then silence (a long eval, a hang): the step reaches the file within about a
        second, without another call and without finalize."""
        import time

        tracker = capture.tracker("quiet")
        tracker.log_training_step(7, {"loss": 0.5})
        deadline = time.monotonic() + 3.0
        while '"step":7' not in tracker.audit_path.read_text():
            assert time.monotonic() < deadline, "the step never reached the audit file"
            time.sleep(0.1)

    @pytest.mark.parametrize(("policy", "synced_per_step"), [("always", True), ("interval", False)])
    def test_fsync_policy(self, capture, monkeypatch, policy, synced_per_step):
        """LEZEA_AUDIT_FSYNC=always puts every record on disk before the call returns; the default
        fsyncs at most once a second; both fsync at finalize."""
        import os

        monkeypatch.setenv("LEZEA_AUDIT_FSYNC", policy)
        synced: list[int] = []
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
        tracker = capture.tracker("fsync")
        before = len(synced)
        for step in range(1, 21):
            tracker.log_training_step(step, {"loss": 1.0 / step})
            if synced_per_step:
                assert f'"step":{step}' in tracker.audit_path.read_text()
        during = len(synced) - before
        assert during >= 20 if synced_per_step else during <= 2
        tracker.finalize_experiment()
        assert len(synced) > before + during  # always at finalize
