"""The audit file: order, concurrency, torn lines, async mode; and secrets that must never reach it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from lezea_otel import ExperimentTracker

SECRETS = ("ghp_abcdefghijklmnopqrstuvwxyz0123", "wJalrXUtnFEMI-K7MDENG-bPxRfiCY", "sk-abcdefghijklmnopqrstuv",
           "hunter2", "secret123", "tok3n-xyz")


def lines(tracker: ExperimentTracker) -> list[dict]:
    return [json.loads(x) for x in tracker.audit_path.read_text().splitlines()]


class TestAuditFile:
    def test_line_shape(self, capture):
        """Every line carries seq, ISO time, kind, step, scope, trace/span ids and the call's data."""
        tracker = capture.tracker("shape", auto_start=True)
        with tracker.tasker_scope("A"):
            tracker.log_training_step(4, {"reward": 1.5}, data_split="val")
        tracker.finalize_experiment()
        event = next(e for e in lines(tracker) if e["kind"] == "training_step")
        assert set(event) == {"seq", "time", "time_unix_nano", "kind", "step", "scope", "trace_id", "span_id", "data"}
        assert event["time"].endswith("Z") and event["time"][10] == "T"
        assert event["scope"] == "tasker:A" and event["step"] == 4
        assert event["data"] == {"metrics": {"tasker:A/reward": 1.5}, "data_split": "val"}
        assert len(event["trace_id"]) == 32 and len(event["span_id"]) == 16

    def test_threads_never_tear_or_reorder_lines(self, capture):
        """Four threads logging at once: every line parses and seq strictly increases."""
        tracker = capture.tracker("threads", auto_start=True)

        def work(worker: int) -> None:
            for step in range(500):
                tracker.log_training_step(step, {f"w{worker}": float(step)}, data_split=f"w{worker}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tracker.finalize_experiment()
        events = lines(tracker)
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert sum(e["kind"] == "training_step" for e in events) == 2000

    def test_async_mode_keeps_call_order(self, capture):
        """async_mode=True hands records to a worker; the audit and summary are the same, in order."""
        tracker = capture.tracker("async", async_mode=True, auto_start=True)
        for step in range(1, 1001):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        summary = tracker.finalize_experiment()
        steps = [e["step"] for e in lines(tracker) if e["kind"] == "training_step"]
        assert steps == list(range(1, 1001))
        assert summary["steps"]["count"] == 1000 and summary["metrics"]["loss"]["last"] == 0.001

    def test_torn_last_line_is_tolerated(self, capture):
        """A crash mid-line: get_experiment_data returns every complete line and names the bad one."""
        tracker = capture.tracker("torn", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker._pipeline.audit.flush()
        with open(tracker.audit_path, "ab") as handle:
            handle.write(b'{"seq": 99, "kind": "training_st')
        data = tracker.get_experiment_data()
        assert data["metrics"]["loss"] == [[1, 0.5]]
        assert len(data["problems"]) == 1 and "is not valid JSON" in data["problems"][0]

    def test_otlp_json_files_parse(self, capture):
        """The OTLP-JSON lines files hold resourceSpans/Metrics/Logs with the experiment id."""
        tracker = capture.tracker("otlp", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.log_comment("hello")
        tracker.finalize_experiment()
        for name, key in (("spans", "resourceSpans"), ("metrics", "resourceMetrics"), ("logs", "resourceLogs")):
            text = (tracker.run_dir / "otlp" / f"{name}.jsonl").read_text()
            assert all(key in json.loads(line) for line in text.splitlines())
            assert tracker.experiment_id in text


class TestSecrets:
    def test_no_secret_reaches_any_file_or_signal(self, capture, monkeypatch, tmp_path):
        """Tokens in env, argv, hyperparameters and the git remote are redacted everywhere."""
        subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
        subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=n", "commit", "-q", "--allow-empty",
                        "-m", "x"], cwd=tmp_path, check=True)
        subprocess.run(["git", "remote", "add", "origin", "https://bob:tok3n-xyz@example.com/r.git"],
                       cwd=tmp_path, check=True)
        monkeypatch.setenv("MY_API_TOKEN", SECRETS[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS[1])
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
        monkeypatch.setenv("LEZEA_ENV_ALLOWLIST", "MY_API_TOKEN,TEAM")
        monkeypatch.setenv("TEAM", "vision")
        monkeypatch.setattr(sys, "argv", ["train.py", f"--api-key={SECRETS[2]}", "--password", SECRETS[3],
                                          "--epochs", "3"])
        tracker = capture.tracker("secrets", auto_start=True)
        tracker.log_lezea_config(8, 2, "SAC", hyperparameters={"lr": 0.1, "wandb_api_key": SECRETS[4]})
        tracker.finalize_experiment()

        written = tracker.audit_path.read_text() + "".join(
            p.read_text() for p in (tracker.run_dir / "otlp").glob("*.jsonl"))
        signals = repr([s.attributes for s in capture.spans()]) + repr([s.resource.attributes for s in capture.spans()])
        signals += repr([r.log_record.attributes for r in capture.logs()])
        for secret in SECRETS:
            assert secret not in written and secret not in signals, secret
        environment = next(e for e in map(json.loads, tracker.audit_path.read_text().splitlines())
                           if e["kind"] == "environment")["data"]
        assert environment["env"]["CUDA_VISIBLE_DEVICES"] == "0,1" and environment["env"]["TEAM"] == "vision"
        assert environment["env"]["MY_API_TOKEN"] == "***"
        assert "AWS_SECRET_ACCESS_KEY" not in environment["env"]
        assert environment["argv"] == ["train.py", "--api-key=***", "--password", "***", "--epochs", "3"]
        assert environment["git"]["remote"] == "https://example.com/r.git"
        assert {"version", "implementation"} <= set(environment["python"])
        assert environment["memory_bytes"] > 0 and environment["cpu"]["logical"] >= 1
