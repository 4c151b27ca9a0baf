"""The merged view of a distributed run: ranks started as real processes with a torchrun environment, one
SIGKILLed while another goes on, a restarted rank, and forked workers whose values and phases count."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from lezea_otel import semconv as names
from lezea_otel.analysis.experiment import load_experiment
from lezea_otel.analysis.runs import load_run, resolve_run, run_folders
from lezea_otel.cli import main as cli

TRAINER = r"""
import multiprocessing, sys, time
from lezea_otel import ExperimentTracker

runs, steps, pause, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
tracker = ExperimentTracker("ranks", runs_dir=runs).start(prometheus_port=None)


def load_data():  # a DataLoader-like worker: one value and one phase, in its own forked process
    with tracker.span("decode"):
        tracker.log_training_step(1, {"data/decode_ms": 7.0})


for step in range(1, steps + 1):
    with tracker.span("forward"):
        time.sleep(pause)  # the work of a step: a slow rank's is longer (this is no synchronisation)
        tracker.log_training_step(step, {"loss": 1.0 / step})
if "fork" in mode:
    worker = multiprocessing.get_context("fork").Process(target=load_data)
    worker.start()
    worker.join()
if "fail" in mode:
    raise RuntimeError("out of memory on the device")
print("ready", flush=True)
if "wait" in mode:
    sys.stdin.readline()  # the test says when this rank may finish
tracker.finalize_experiment()
"""


def launch_env(rank: int, world: int, run_id: str, exporter: str, attempt: int = 0) -> dict[str, str]:
    """What torchrun gives each of its processes, and a durable audit line per call (read while it runs)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
    environment.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                        "LOCAL_WORLD_SIZE": str(world), "GROUP_RANK": "0", "TORCHELASTIC_RUN_ID": run_id,
                        "TORCHELASTIC_RESTART_COUNT": str(attempt), "LEZEA_EXPORTER": exporter,
                        "LEZEA_AUDIT_FSYNC": "always", "LEZEA_QUIET": "1"})
    return environment


def start(runs: Path, steps: int, mode: str, env: dict[str, str],
          pause: float = 0.0) -> subprocess.Popen[str]:
    """TRAINER as its own process; ``mode`` names what it does besides its steps (fork, fail, wait)."""
    return subprocess.Popen([sys.executable, "-c", TRAINER, str(runs), str(steps), str(pause), mode],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def table_rows(output: str) -> list[list[str]]:
    """The cells of every table row in ``output``, a cell folded over several lines joined again."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if rows and not cells[0] and len(cells) == len(rows[-1]):
            rows[-1] = [" ".join(filter(None, pair)) for pair in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return rows


def row_of(output: str, *first: str) -> list[str]:
    """The cells of the first table row whose first cells are ``first``."""
    return next(row for row in table_rows(output) if row[:len(first)] == list(first))


@pytest.fixture(scope="module")
def killed_rank(tmp_path_factory) -> dict[str, str]:
    """Two ranks of one launch: rank 1 (slow steps) SIGKILLed after 3 steps while rank 0 (10 steps and a
    forked worker) waits; what the CLI printed then, and after rank 0 finished."""
    runs = tmp_path_factory.mktemp("ranks") / "runs"
    survivor = start(runs, 10, "fork,wait", launch_env(0, 2, "launch-kill", "thread"))
    doomed = start(runs, 3, "wait", launch_env(1, 2, "launch-kill", "none"), pause=0.05)
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "ready"
        assert survivor.stdout is not None and survivor.stdout.readline().strip() == "ready"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)  # reaped: its pid is gone, as a dead rank's is
        seen = {"runs": invoke("runs", str(runs))}
        (experiment,) = run_folders(runs)
        seen["show"] = invoke("show", experiment.name[:8], "--runs-dir", str(runs))
        survivor.communicate("go\n", timeout=20)
        assert survivor.returncode == 0
    finally:
        for process in (survivor, doomed):
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)  # reaps it and closes its pipes
    seen.update(runs_after=invoke("runs", str(runs)), dir=str(runs), id=experiment.name,
                show_after=invoke("show", experiment.name, "--runs-dir", str(runs)),
                slow=invoke("slow", experiment.name, "--runs-dir", str(runs), "--top", "20"))
    return seen


class TestKilledRank:
    def test_one_row_per_experiment_degraded_while_a_rank_runs(self, killed_rank):
        """Two rank folders are one experiment: `degraded` while rank 0 still runs and rank 1 is dead."""
        (cells,) = table_rows(killed_rank["runs"])  # one row for the two ranks
        assert cells[0] == killed_rank["id"][:8]
        assert cells[2] == "degraded" and cells[3] == "2 ranks: 1 crashed, 1 running"
        assert cells[8] == "10"  # rank 0's steps head the row; the worker's step record is no step

    def test_crashed_once_every_rank_ended(self, killed_rank):
        cells = row_of(killed_rank["runs_after"], killed_rank["id"][:8])
        assert cells[2] == "crashed" and cells[3] == "2 ranks: 1 crashed, 1 finished"

    def test_show_has_a_row_per_rank_and_the_straggler(self, killed_rank):
        """Per rank: status, last step, steps/s, last loss; rank 1 is behind and slower."""
        out = killed_rank["show_after"]
        assert "experiment crashed, 2 ranks: 1 crashed, 1 finished" in out
        rank0, rank1 = row_of(out, "0"), row_of(out, "1")
        assert rank0[2:6] == ["0", "finished", "10", "10"] and rank0[7] == "0.1" and rank0[8] == "1"
        assert rank1[2:6] == ["0", "crashed", "3", "3"] and rank1[7] == "0.3333"
        assert float(rank1[6]) <= 20 < float(rank0[6])  # 50 ms a step: 20 steps/s at most; rank 0 far faster
        assert "straggler by last step: rank 1 at step 3, 7 steps behind rank 0" in out
        assert re.search(r"straggler by step rate: rank 1 at [\d.]+ steps/s, \d+% slower than rank 0", out)
        assert "[critical] rank 1: The run stopped without an end record after step 3" in out

    def test_show_while_degraded_says_so(self, killed_rank):
        out = killed_rank["show"]
        assert "experiment degraded, 2 ranks: 1 crashed, 1 running" in out
        assert row_of(out, "0")[3] == "running"

    def test_forked_worker_counts_in_its_rank(self, killed_rank):
        """The worker's value and phase are in rank 0's figures; its step record adds no step."""
        out = killed_rank["show_after"]
        headline = out.split("rank 0, the headline")[1]
        assert "status finished" in headline and "10 steps (last step 10)" in headline
        assert row_of(headline, "data/decode_ms")[1:3] == ["1", "7"]
        assert "phase decode: 1x" in headline and "phase forward: 10x" in headline
        assert "forked workers: 1, folded into the figures above (1 step records" in headline

    def test_slow_per_rank_and_the_straggler_per_phase(self, killed_rank):
        out = killed_rank["slow"]
        assert row_of(out.split("Phases by total time (all ranks)")[1], "forward")[1] == "13"
        per_rank = out.split("Per rank")[1]
        assert row_of(per_rank, "phase", "forward", "0")[3] == "10"
        assert row_of(per_rank, "phase", "forward", "1")[3] == "3"
        straggler = row_of(out.split("Straggler per phase")[1], "phase", "forward")
        assert straggler[2] == "1" and straggler[4] == "0" and float(straggler[3]) >= 0.05
        assert float(straggler[6].split("x")[0]) > 1
        (decode,) = [row for row in table_rows(out.split("Slowest instances")[1]) if row[2] == "decode"]
        assert re.fullmatch(r"0 \(worker \d+\)", decode[0])  # the rank, and the worker that timed it

    def test_compare_takes_the_headline_rank_and_says_the_world_size(self, killed_rank):
        """The experiment (rank 0's figures) against its rank 1 alone: each says it is one of 2 ranks."""
        folder = Path(killed_rank["dir"]) / killed_rank["id"]
        out = invoke("compare", str(folder), str(folder / names.RANK_DIR.format(rank=1)))
        assert row_of(out, "status")[1:] == ["crashed (2 ranks, rank 0's figures)",
                                             "crashed (2 ranks, rank 1's figures)"]
        assert row_of(out, "steps")[1:] == ["10", "3"]
        assert row_of(out.split("Phases:")[1], "forward")[1].endswith("(10x)")

    def test_show_json_has_the_ranks_of_the_table(self, killed_rank):
        data = orjson.loads(invoke("show", killed_rank["id"], "--runs-dir", killed_rank["dir"], "--json"))
        assert data["experiment"]["world_size"] == 2 and data["experiment"]["status"] == "crashed"
        assert [(r["rank"], r["status"], r["last_step"]) for r in data["ranks"]] == [
            (0, "finished", 10), (1, "crashed", 3)]
        assert [s["by"] for s in data["step_stragglers"]][:1] == ["last step"]
        assert data["run"]["steps"]["count"] == 10 and data["experiment"]["headline_member"] == "rank 0"

    def test_a_rank_folder_shows_that_rank(self, killed_rank):
        """A path to runs/<id>/rank-1 is that rank alone, as its own run."""
        folder = Path(killed_rank["dir"]) / killed_rank["id"] / names.RANK_DIR.format(rank=1)
        out = invoke("show", str(folder))
        assert "rank 1 of experiment" in out and "status crashed" in out and "3 steps" in out
        assert "Ranks" not in out
        assert resolve_run(str(folder), Path(killed_rank["dir"])) == folder

    def test_public_api_merges_the_same(self, killed_rank):
        experiment = load_experiment(Path(killed_rank["dir"]) / killed_rank["id"])
        assert experiment.distributed and experiment.world_size == 2 and experiment.status == "crashed"
        assert [(row.rank, row.status, row.last_step) for row in experiment.rank_rows()] == [
            (0, "finished", 10), (1, "crashed", 3)]
        run = load_run(Path(killed_rank["dir"]) / killed_rank["id"])  # the experiment folder: its headline
        assert run.launch["rank"] == 0 and run.summary()["workers"] == {"count": 1, "steps": 1}


class TestAttemptsAndLoneRuns:
    def test_restarted_rank_lists_its_attempts(self, tmp_path):
        """A worker group restarted by torchrun: attempt 0 failed, attempt 1 finished; the rank is
        finished, both attempts are listed, an unseen rank is counted."""
        runs = tmp_path / "runs"
        first = start(runs, 2, "fail", launch_env(0, 2, "launch-restart", "none"))
        first.communicate(timeout=20)
        assert first.returncode == 1
        again = start(runs, 4, "", launch_env(0, 2, "launch-restart", "none", attempt=1))
        again.communicate(timeout=20)
        assert again.returncode == 0
        (experiment,) = run_folders(runs)
        rank0 = names.RANK_DIR.format(rank=0)
        restarted = rank0 + names.ATTEMPT_SUFFIX.format(attempt=1)
        assert {p.name for p in experiment.iterdir()} == {rank0, restarted}
        cells = row_of(invoke("runs", str(runs)), experiment.name[:8])
        assert cells[2] == "finished" and cells[3] == "2 ranks: 1 finished, 1 not seen; 1 earlier attempt"
        out = invoke("show", experiment.name, "--runs-dir", str(runs))
        assert row_of(out, "0")[2:6] == ["0, 1", "finished", "4", "4"]
        assert f"rank 0 attempts: 0 failed ({rank0}), 1 finished ({restarted})" in out
        assert "rank 0 attempt 1, the headline" in out

    def test_lone_run_with_a_forked_worker(self, tmp_path):
        """No launcher: the plain layout, as before; the worker's value and phase count, not its step."""
        runs = tmp_path / "runs"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
        process = start(runs, 3, "fork", {**environment, "LEZEA_EXPORTER": "thread", "LEZEA_QUIET": "1"})
        process.communicate(timeout=20)
        assert process.returncode == 0
        (experiment,) = run_folders(runs)
        assert (experiment / names.AUDIT_FILE).is_file()
        cells = row_of(invoke("runs", str(runs)), experiment.name[:8])
        assert cells[2] == "finished" and cells[3] == "-" and cells[8] == "3"
        out = invoke("show", experiment.name[:8], "--runs-dir", str(runs))
        assert "Ranks" not in out and "3 steps (last step 3)" in out
        assert row_of(out, "data/decode_ms")[1] == "1" and "phase decode: 1x" in out
        slow = invoke("slow", experiment.name, "--runs-dir", str(runs))
        assert row_of(slow.split("Phases by total time")[1], "decode")[1] == "1"

    def test_lone_run_started_again_under_its_id(self, tmp_path):
        """LEZEA_EXPERIMENT_ID used twice: one experiment with two attempts; the later one's status wins."""
        runs = tmp_path / "runs"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
        environment.update(LEZEA_EXPORTER="none", LEZEA_QUIET="1", LEZEA_EXPERIMENT_ID="resumed")
        for steps, mode, code in ((2, "fail", 1), (5, "", 0)):
            process = start(runs, steps, mode, environment)
            process.communicate(timeout=20)
            assert process.returncode == code
        cells = row_of(invoke("runs", str(runs)), "resumed")
        assert cells[2] == "finished" and cells[3] == "2 attempts" and cells[8] == "5"
        out = invoke("show", "resumed", "--runs-dir", str(runs))
        assert "experiment finished, 2 attempts" in out
        first, again = row_of(out, "0"), row_of(out, "1")
        assert first[1:4] == ["failed", "2", "2"] and first[-1] == "resumed"
        assert again[1:4] == ["finished", "5", "5"] and again[-1] == names.ATTEMPT_DIR.format(attempt=1)
        assert "run attempt 1, the headline" in out and "5 steps (last step 5)" in out
