"""Runs that are never finalized still end: at normal exit, after an uncaught exception, across fork."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from lezea_otel.cli import main as cli

SCRIPT = """
import os, sys
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("exit-test", runs_dir=sys.argv[1], quiet=True, auto_start=True)
for step in range(1, 4):
    tracker.log_training_step(step, {"loss": 1.0 / step})
print(tracker.experiment_id)
sys.stdout.flush()
"""


def _run(tmp_path: Path, tail: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
    env["LEZEA_PROMETHEUS_PORT"] = "0"
    proc = subprocess.run([sys.executable, "-c", SCRIPT + textwrap.dedent(tail), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    run_dir = tmp_path / proc.stdout.split()[0]
    return proc, run_dir


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _root_span(run_dir: Path) -> dict:
    for line in (run_dir / "otlp" / "spans.jsonl").read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    if span["name"] == "experiment":
                        return span
    raise AssertionError("no experiment span exported")


class TestExitWithoutFinalize:
    def test_normal_exit_ends_the_run(self, tmp_path):
        """A script that forgets finalize still gets its end record, its root span and a flushed audit."""
        proc, run_dir = _run(tmp_path, "")
        assert proc.returncode == 0, proc.stderr
        end = _events(run_dir)[-1]
        assert end["kind"] == "experiment_end"
        assert end["data"]["status"] == "abandoned" and end["data"]["ended_by"] == "atexit"
        assert [e["step"] for e in _events(run_dir) if e["kind"] == "training_step"] == [1, 2, 3]
        assert _root_span(run_dir).get("status", {}).get("code") in (None, "STATUS_CODE_UNSET", 0)

    def test_uncaught_exception_marks_the_run_failed(self, tmp_path):
        """An uncaught exception ends the root span with ERROR status and the exception, and still exits 1."""
        proc, run_dir = _run(tmp_path, "raise RuntimeError('diverged at step 3')\n")
        assert proc.returncode == 1
        assert "RuntimeError: diverged at step 3" in proc.stderr  # the user's traceback is untouched
        end = _events(run_dir)[-1]
        assert end["data"]["status"] == "failed"
        assert "diverged at step 3" in end["data"]["error"]
        root = _root_span(run_dir)
        assert root["status"]["code"] in ("STATUS_CODE_ERROR", 2)
        assert any(event["name"] == "exception" for event in root.get("events", []))


DROPPED = """
import gc, sys
from lezea_otel import ExperimentTracker
def train():
    t = ExperimentTracker("dropped", runs_dir=sys.argv[1], quiet=True, async_mode=sys.argv[2] == "async")
    t.start(prometheus_port=None)
    for i in range(100):
        t.log_training_step(i, {"loss": 1.0})
    print(t.experiment_id, flush=True)
train(); gc.collect()
"""


def _cli_status(tmp_path: Path, run_dir: Path) -> str:
    """The status ``lezea-otel runs`` lists for the one run in ``tmp_path``."""
    listed = CliRunner().invoke(cli, ["runs", str(tmp_path), "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)["runs"]
    assert row["id"] == run_dir.name
    return str(row["status"])


class TestAbandoned:
    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_a_tracker_dropped_without_finalize_ends_its_run_with_every_record(self, tmp_path, mode):
        """The issue's reproduction: a tracker made in a function that returns, then collected. Every step
        is in the audit, the run ends ``abandoned`` (ended by the garbage collection), the exporter's files
        hold its root span, and ``runs`` says so."""
        env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
        proc = subprocess.run([sys.executable, "-c", DROPPED, str(tmp_path), mode], capture_output=True,
                              text=True, timeout=60, env=env, check=False)
        assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
        run_dir = tmp_path / proc.stdout.split()[0]
        events = _events(run_dir)
        assert [e["step"] for e in events if e["kind"] == "training_step"] == list(range(100))
        assert (events[-1]["kind"], events[-1]["data"]["status"], events[-1]["data"]["ended_by"]) == (
            "experiment_end", "abandoned", "garbage_collected")
        assert _root_span(run_dir)["name"] == "experiment"
        assert _cli_status(tmp_path, run_dir) == "abandoned"

    def test_a_tracker_alive_at_exit_without_finalize_is_abandoned_not_finished(self, tmp_path):
        proc, run_dir = _run(tmp_path, "")
        assert proc.returncode == 0, proc.stderr
        assert _cli_status(tmp_path, run_dir) == "abandoned"

    def test_a_tracker_never_started_leaves_no_folder(self, tmp_path):
        """Made and dropped, or alive at exit, without start(): nothing was recorded, no folder is left."""
        script = ("import sys; from lezea_otel import ExperimentTracker\n"
                  "dropped = ExperimentTracker('dropped', runs_dir=sys.argv[1]); del dropped\n"
                  "kept = ExperimentTracker('kept', runs_dir=sys.argv[1]); print(kept.run_dir, flush=True)\n")
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert Path(proc.stdout.strip()).parent == tmp_path
        assert list(tmp_path.iterdir()) == []

    def test_a_run_folder_without_a_record_is_listed_not_started(self, tmp_path):
        """A tracker killed before start() leaves its folder with an empty audit: ``runs`` says so."""
        (tmp_path / "empty-run").mkdir()
        (tmp_path / "empty-run" / "events.jsonl").write_bytes(b"")
        assert _cli_status(tmp_path, tmp_path / "empty-run") == "not started"


class TestFork:
    def test_forked_child_never_writes_the_parents_run(self, tmp_path):
        """A forked worker that logs neither deadlocks nor writes into the parent's audit."""
        tail = """
        pid = os.fork()
        if pid == 0:
            tracker.log_training_step(99, {"loss": 9.9})
            os._exit(0)
        os.waitpid(pid, 0)
        tracker.log_training_step(4, {"loss": 0.2})
        tracker.finalize_experiment()
        """
        proc, run_dir = _run(tmp_path, tail)
        assert proc.returncode == 0, proc.stderr
        steps = [e["step"] for e in _events(run_dir) if e["kind"] == "training_step"]
        assert steps == [1, 2, 3, 4]


    def test_forked_workers_that_log_get_their_own_identity_in_the_same_trace(self, tmp_path):
        """multiprocessing workers (fork start method, as DataLoader uses) that log are parts of the
        run: each has its own audit under workers/<pid>/, which the run's exporter follows into the run's
        OTLP files with a new service.instance.id and the worker's own process.pid, and a `worker` span
        under the scope open at the fork."""
        tail = """
        import multiprocessing
        def work(index):
            tracker.log_training_step(100 + index, {"loss": 9.9})
        with tracker.builder_scope("b1"):
            workers = [multiprocessing.get_context("fork").Process(target=work, args=(i,)) for i in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        tracker.finalize_experiment()
        print(os.getpid(), *[worker.pid for worker in workers])
        """
        proc, run_dir = _run(tmp_path, tail)
        assert proc.returncode == 0, proc.stderr
        parent_pid, *worker_pids = (int(word) for word in proc.stdout.split()[1:])
        assert [e["step"] for e in _events(run_dir) if e["kind"] == "training_step"] == [1, 2, 3]
        builder = next(s for s, _ in _spans(run_dir) if s["name"] == "builder")
        parent_resource = next(r for s, r in _spans(run_dir) if s["name"] == "experiment")
        for index, pid in enumerate(worker_pids):
            worker_dir = run_dir / "workers" / str(pid)
            assert [e["step"] for e in _events(worker_dir) if e["kind"] == "training_step"] == [100 + index]
            span, resource = next((s, r) for s, r in _spans(run_dir)
                                  if s["name"] == "worker" and int(r["process.pid"]) == pid)
            assert span["traceId"] == builder["traceId"] and span["parentSpanId"] == builder["spanId"]
            assert int(resource["process.pid"]) == pid and int(resource["process.parent_pid"]) == parent_pid
            assert resource["service.instance.id"] != parent_resource["service.instance.id"]
            assert resource["lezea.experiment.id"] == parent_resource["lezea.experiment.id"]

    def test_persistent_dataloader_workers_end_with_the_run(self, tmp_path):
        """A torch DataLoader with ``persistent_workers=True``, alive when the run ends: each worker ends its
        record then (their phases are exported, none truncated), and the summary counts their phases."""
        tail = """
        import json, torch
        from torch.utils.data import DataLoader, Dataset
        class Items(Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, index):
                with tracker.span("decode"):
                    return torch.tensor([float(index)])
        loader = DataLoader(Items(), batch_size=2, num_workers=2, persistent_workers=True)
        for epoch in range(2):
            for batch in loader:
                pass
        summary = tracker.finalize_experiment()
        print(json.dumps({"decode": summary["phases"]["decode"]["count"], "workers": summary["workers"]}))
        """
        proc, run_dir = _run(tmp_path, tail)
        assert proc.returncode == 0, proc.stderr
        figures = json.loads(proc.stdout.splitlines()[-1])
        assert figures == {"decode": 16, "workers": {"count": 2, "steps": 0}}
        ends = [_events(folder)[-1] for folder in sorted((run_dir / "workers").iterdir())]
        assert [(e["kind"], e["data"]["status"], e["data"]["ended_by"]) for e in ends] == [
            ("experiment_end", "finished", "run_end")] * 2
        decodes = [s for s, _ in _spans(run_dir) if s["name"] == "decode"]
        assert len(decodes) == 16
        assert not any(a["key"] == "lezea.span.truncated" for s in decodes for a in s.get("attributes", []))


def _spans(run_dir: Path) -> list[tuple[dict, dict]]:
    """(span, resource attributes) pairs from a run's OTLP-JSON spans file."""
    def value(v: dict):
        return next(iter(v.values()))
    out = []
    for line in (run_dir / "otlp" / "spans.jsonl").read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            resource = {a["key"]: value(a["value"]) for a in resource_spans["resource"]["attributes"]}
            for scope_spans in resource_spans["scopeSpans"]:
                out.extend((span, resource) for span in scope_spans["spans"])
    return out


class TestSigterm:
    def test_sigterm_ends_the_run_as_terminated(self, tmp_path):
        """Preemption: the run ends `terminated`, flushed, and the process still dies of SIGTERM."""
        proc, run_dir = _run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)\n"
                                       "import time; time.sleep(5)\n")
        assert proc.returncode == -15
        end = _events(run_dir)[-1]
        assert end["kind"] == "experiment_end" and end["data"]["status"] == "terminated"
        assert end["data"]["ended_by"] == "sigterm"
        assert _root_span(run_dir)["attributes"]

    def test_users_handler_keeps_working(self, tmp_path):
        """A SIGTERM handler installed before the tracker still runs after the run is closed."""
        tail = """
        import os, signal
        os.kill(os.getpid(), signal.SIGTERM)
        """
        script = ("import signal, sys\n"
                  "signal.signal(signal.SIGTERM, lambda *a: (print('user handler', flush=True), "
                  "sys.exit(3)))\n")
        env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
        proc = subprocess.run([sys.executable, "-c", script + SCRIPT + textwrap.dedent(tail), str(tmp_path)],
                              capture_output=True, text=True, timeout=60,
                              env={**env, "LEZEA_PROMETHEUS_PORT": "0"}, check=False)
        assert proc.returncode == 3 and "user handler" in proc.stdout
        run_dir = tmp_path / proc.stdout.split()[0]
        assert _events(run_dir)[-1]["data"]["status"] == "terminated"

    def test_a_first_start_on_another_thread_does_not_leave_sigterm_unhandled(self, tmp_path):
        """Signal handlers can only be set from the main thread: when the first run starts on another
        thread, the next start on the main thread sets them, and SIGTERM then ends both runs."""
        script = """
import sys, threading
from lezea_otel import ExperimentTracker
first = []
starter = threading.Thread(target=lambda: first.append(
    ExperimentTracker("in-a-thread", runs_dir=sys.argv[1], quiet=True, auto_start=True)))
starter.start()
starter.join()
""" + SCRIPT + textwrap.dedent("""
        import os, signal, time
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        """)
        env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                              timeout=60, env={**env, "LEZEA_PROMETHEUS_PORT": "0"}, check=False)
        assert proc.returncode == -15, proc.stderr
        ends = [_events(run_dir)[-1]["data"] for run_dir in tmp_path.iterdir()]
        assert len(ends) == 2 and all(end["status"] == "terminated" for end in ends)
