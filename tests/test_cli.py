"""The `lezea-otel` console script, run as a user would, on runs the tracker produced."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lezea_otel.cli.demo import run as demo_run

from .otlp_receiver import HttpReceiver

SCRIPT = Path(sys.executable).parent / "lezea-otel"


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
    environment.update(env or {})
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=environment,
                          cwd=cwd)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> tuple[Path, str]:
    runs = tmp_path_factory.mktemp("cli") / "runs"
    tracker = demo_run(steps=20, runs_dir=str(runs))
    return runs, tracker.experiment_id


class TestListAndShow:
    def test_runs_table(self, demo_runs):
        """`runs DIR` lists the run with its name, status, steps and losses."""
        runs, run_id = demo_runs
        result = cli("runs", str(runs))
        assert result.returncode == 0, result.stderr
        row = next(line for line in result.stdout.splitlines() if run_id[:8] in line)
        assert "demo" in row and "finished" in row and "local" in row
        assert " 40 " in row  # 2 builders x 20 train steps; the 4 validation calls are no steps

    def test_show_by_prefix(self, demo_runs):
        """`show PREFIX` prints metrics, the scope tree, artifacts, words and advice."""
        runs, run_id = demo_runs
        result = cli("show", run_id[:6], "--runs-dir", str(runs))
        assert result.returncode == 0, result.stderr
        out = result.stdout
        for expected in ("builder:b0/network:net-b0/train/loss", "layer:encoder: 20x",
                         "phase data_loading: 40x", "checkpoint_final.bin",
                         "Synthetic run: loss decays as expected.", "reward tasker:t0",
                         "[warning] GPU of tasker#0", "algorithm_type=SAC", "observed: ", "peak RSS"):
            assert expected in out, expected

    def test_slow_finds_the_slow_phase(self, demo_runs):
        """`slow` ranks data_loading first and gives the trace id of its slowest instance."""
        runs, run_id = demo_runs
        result = cli("slow", run_id, "--runs-dir", str(runs), "--top", "3")
        assert result.returncode == 0, result.stderr
        phases = result.stdout.split("Phases by total time")[1]
        first_row = next(line for line in phases.splitlines() if "│" in line and "name" not in line)
        assert "data_loading" in first_row
        events = [json.loads(x) for x in (runs / run_id / "events.jsonl").read_text().splitlines()]
        slowest = max((e for e in events if e["kind"] == "phase"), key=lambda e: e["data"]["duration_s"])
        assert slowest["trace_id"] in result.stdout and slowest["span_id"] in result.stdout

    def test_report_is_self_contained(self, demo_runs, tmp_path):
        """`report` writes one HTML file with plotly embedded and no network reference."""
        runs, run_id = demo_runs
        output = tmp_path / "report.html"
        result = cli("report", run_id[:8], "-o", str(output), "--runs-dir", str(runs))
        assert result.returncode == 0, result.stderr
        page = output.read_text()
        assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing loaded from elsewhere
        assert all(f'id="plot-{name}"' in page
                   for name in ("metric-loss", "metric-acc", "resources", "timeline"))
        assert "data_loading" in page


class TestDemo:
    def test_the_commands_the_demo_suggests_work_as_printed(self, tmp_path):
        """README's demo command runs .venv/bin/lezea-otel without activating the virtualenv: the "Next:"
        commands it prints must run as printed, from the same folder and PATH."""
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if Path(p).resolve() != SCRIPT.parent.resolve())
        env = {"PATH": path}
        result = cli("demo", "--steps", "3", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        suggested = result.stdout.split("Next:", 1)[1].strip().splitlines()
        assert len(suggested) == 4 and all(line.strip().startswith(str(SCRIPT)) for line in suggested)
        for line in suggested:
            environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
            done = subprocess.run(["bash", "-c", line.strip()], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=120, env=environment | env)
            assert done.returncode == 0, (line, done.stderr)


class TestErrors:
    def test_runs_of_a_folder_that_does_not_exist_is_an_error(self, tmp_path):
        """A mistyped folder exits 2 and says so; an empty one lists nothing, with exit 0."""
        result = cli("runs", str(tmp_path / "nonexistent"))
        assert result.returncode == 2 and "no such directory" in result.stderr
        (tmp_path / "empty").mkdir()
        result = cli("runs", str(tmp_path / "empty"))
        assert result.returncode == 0 and "No runs in" in result.stdout

    def test_missing_run_lists_close_matches(self, demo_runs):
        """An unknown run id exits 2 and names close matches."""
        runs, run_id = demo_runs
        result = cli("show", run_id[:6] + "zz", "--runs-dir", str(runs))
        assert result.returncode == 2
        assert "No run matches" in result.stderr and run_id in result.stderr

    def test_ambiguous_prefix(self, demo_runs, tmp_path):
        """A prefix shared by two runs exits 2 and lists both."""
        runs, run_id = demo_runs
        shared = tmp_path / "runs"
        for suffix in ("a", "b"):
            shutil.copytree(runs / run_id, shared / f"{run_id[:4]}{suffix}")
        result = cli("show", run_id[:4], "--runs-dir", str(shared))
        assert result.returncode == 2 and "ambiguous" in result.stderr
        assert f"{run_id[:4]}a" in result.stderr and f"{run_id[:4]}b" in result.stderr

    def test_torn_audit_is_shown_with_a_warning(self, demo_runs, tmp_path):
        """A torn last line: everything readable is shown, the warning names file and line."""
        runs, run_id = demo_runs
        copy = tmp_path / run_id
        shutil.copytree(runs / run_id, copy)
        lines = (copy / "events.jsonl").read_text().splitlines()
        with open(copy / "events.jsonl", "a") as handle:
            handle.write('{"seq": 999, "kind": "trai')
        result = cli("show", str(copy))
        assert result.returncode == 0, result.stderr
        assert f"line {len(lines) + 1} is not valid JSON" in result.stderr and "events.jsonl" in result.stderr
        assert "builder:b0/network:net-b0/train/loss" in result.stdout


class TestDemoAndDoctor:
    def test_demo_prints_where_and_what_next(self, tmp_path):
        """`demo` runs in local mode and tells the user where the run is and what to run next."""
        result = cli("demo", "--steps", "5", "--runs-dir", str(tmp_path / "runs"))
        assert result.returncode == 0, result.stderr
        (run_dir,) = list((tmp_path / "runs").iterdir())
        assert str(run_dir) in result.stdout
        assert f"lezea-otel show {run_dir.name[:8]}" in result.stdout
        assert "local mode" in result.stderr

    def test_doctor_local_mode_passes(self, tmp_path):
        """With nothing configured the node is fine: exit 0, settings and their sources shown."""
        result = cli("doctor", "--port", "0", env={"LEZEA_RUNS_DIR": str(tmp_path / "r")}, cwd=tmp_path)
        assert result.returncode == 0, result.stdout
        assert "LEZEA_RUNS_DIR" in result.stdout and "local mode" in result.stdout

    def test_doctor_fails_on_an_unreachable_endpoint(self, tmp_path):
        """A configured endpoint that does not answer is a failure, exit 1."""
        result = cli("doctor", "--port", "0", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
                     cwd=tmp_path)
        assert result.returncode == 1
        assert "FAIL" in result.stdout and "127.0.0.1:9" in result.stdout

    def test_doctor_accepts_a_real_otlp_receiver(self, tmp_path):
        """An endpoint that answers OTLP/HTTP passes."""
        receiver = HttpReceiver()
        try:
            result = cli("doctor", "--port", "0", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
                         cwd=tmp_path)
        finally:
            receiver.stop()
        assert result.returncode == 0, result.stdout
        assert "answers" in result.stdout


class TestCrashedRun:
    def test_killed_run_is_shown_as_crashed(self, tmp_path):
        """A run killed with SIGKILL has no end record and its process is gone: status crashed."""
        code = ("import sys, time\nfrom lezea_otel import ExperimentTracker\n"
                "t = ExperimentTracker('doomed', runs_dir=sys.argv[1], quiet=True)\n"
                "t.start(prometheus_port=None)\n"
                "for s in range(1, 4):\n"
                "    t.log_training_step(s, {'loss': 1.0 / s if s < 3 else float('nan')})\n"
                "t._session.pipeline.flush()\nprint('ready', flush=True)\ntime.sleep(60)\n")
        with subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True) as proc:
            assert proc.stdout.readline().strip() == "ready"
            running = cli("runs", str(tmp_path))
            assert "running" in running.stdout
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        time.sleep(0.1)
        result = cli("runs", str(tmp_path))
        row = next(line for line in result.stdout.splitlines() if "doomed" in line)
        assert "crashed" in row and " 3 " in row
        run_id = next(p.name for p in tmp_path.iterdir())
        shown = cli("show", run_id, "--runs-dir", str(tmp_path))
        assert "status crashed" in shown.stdout and "no end record" in shown.stdout
        assert "last step 3" in shown.stdout
        assert "[critical] The run stopped without an end record after step 3: loss was nan" in shown.stdout


def test_calls_after_finalize_do_not_change_the_answer(tmp_path):
    """finalize's summary is the run's answer: a call after it is in the audit only, and `show` says the
    same steps and headline as finalize returned, with a line counting that call."""
    from lezea_otel import ExperimentTracker

    tracker = ExperimentTracker("late", runs_dir=tmp_path / "runs", quiet=True)
    tracker.start(prometheus_port=None)
    for step in range(1, 11):
        tracker.log_training_step(step, {"loss": 3.0 / step})
    summary = tracker.finalize_experiment()
    tracker.log_training_step(11, {"loss": 0.1})  # after finalize: one warning, the audit only
    assert '"step":11' in tracker.audit_path.read_text()
    shown = json.loads(cli("show", tracker.experiment_id, "--runs-dir", str(tmp_path / "runs"),
                           "--json").stdout)["run"]
    assert shown["steps"] == summary["steps"] and shown["headline"] == summary["headline"]
    assert shown["steps"]["count"] == 10 and shown["run"]["calls_after_end"] == 1
    text = cli("show", tracker.experiment_id, "--runs-dir", str(tmp_path / "runs")).stdout
    assert "after finalize: 1 call(s), in the audit only" in text
