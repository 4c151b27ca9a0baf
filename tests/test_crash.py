"""kill -9 at random moments: the audit and the OTLP files parse up to their last complete line,
the run reads as crashed, and its record can still be replayed."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lezea_otel.analysis.runs import load_run
from lezea_otel.audit.reader import read_events

from .otlp_receiver import HttpReceiver

TRAINING = """
import sys
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("crash", runs_dir=sys.argv[1], quiet=True)
tracker.start(prometheus_port=None)
print(tracker.experiment_id, flush=True)
step = 0
while True:
    step += 1
    with tracker.builder_scope(str(step % 3)), tracker.span("forward"):
        tracker.log_training_step(step, {"loss": 1.0 / step, "acc": step % 7 / 7})
    if step % 50 == 0:
        tracker.log_comment(f"step {step}")
"""


def kill_at_random(tmp_path: Path, seed: int, delay: float | None = None) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
    env["LEZEA_METRIC_EXPORT_INTERVAL_MS"] = "100"
    with subprocess.Popen([sys.executable, "-c", TRAINING, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                          env=env) as proc:
        run_id = proc.stdout.readline().strip()
        time.sleep(delay if delay is not None else random.Random(seed).uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return tmp_path / run_id


def parse_all_but_last(path: Path) -> int:
    """Every line parses, except at most a torn last one; returns the number of complete lines."""
    lines = path.read_bytes().split(b"\n")
    complete = [line for line in lines[:-1] if line.strip()]
    for line in complete:
        json.loads(line)
    return len(complete)


@pytest.mark.parametrize("seed", range(20))
def test_sigkill_leaves_a_readable_run(tmp_path, seed):
    """Whenever the process dies, the record is readable and ordered, and the run shows as crashed."""
    run_dir = kill_at_random(tmp_path, seed)
    problems: list[str] = []
    events = list(read_events(run_dir / "events.jsonl", problems))
    assert len(problems) <= 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "experiment_start"
    for name in ("spans.jsonl", "metrics.jsonl", "logs.jsonl"):
        path = run_dir / "otlp" / name
        if path.exists():
            parse_all_but_last(path)
    run = load_run(run_dir)
    assert run.status == "crashed"
    assert run.summary()["steps"]["count"] == sum(e["kind"] == "training_step" for e in events)


def test_crashed_run_replays(tmp_path):
    """A killed run goes to a collector afterwards with `replay --all` (the alias of `export`): what it
    recorded, its open spans ended truncated and its root ``crashed``, with its metrics."""
    from click.testing import CliRunner

    from lezea_otel.cli import main

    run_dir = kill_at_random(tmp_path, 0, delay=0.4)  # the audit reaches the file every 200 ms
    receiver = HttpReceiver()
    try:
        result = CliRunner().invoke(main, ["replay", str(run_dir), "--all", "--endpoint", receiver.endpoint])
    finally:
        receiver.stop()
    assert result.exit_code == 0, result.output
    spans = receiver.received.spans()
    root = next(span for span in spans if span.name == "experiment")
    assert {a.key: a.value.string_value for a in root.attributes}["lezea.run.status"] == "crashed"
    assert sum(span.name == "forward" for span in spans) >= 1
    assert receiver.received.metric_points("lezea.training.loss")


ASYNC_TRAINING = """
import mmap, struct, sys, time
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("async-crash", runs_dir=sys.argv[1], async_mode=True, quiet=True)
tracker.start(prometheus_port=None)
with open(sys.argv[2], "r+b") as file:
    returned = mmap.mmap(file.fileno(), 16)  # the last call that returned, and when: read after the kill
print(tracker.experiment_id, flush=True)
step = 0
while True:
    step += 1
    with tracker.span("forward"):
        tracker.log_training_step(step, {"loss": 1.0 / step})
    returned[0:16] = struct.pack("<qq", step, time.time_ns())
"""
FLUSH_INTERVAL_S = 0.2
ONE_BATCH_S = 0.05
"""Writing one batch of a backlog at the writer's pace, on a busy machine: the loss allowed beyond the
flush interval."""


@pytest.fixture
def busy_cores():
    """Two processes spinning: both of this machine's cores busy, as a loaded training node's are."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def test_async_mode_under_load_loses_at_most_the_flush_interval_at_sigkill(tmp_path, busy_cores):
    """Async mode on cores that other processes keep busy, killed with SIGKILL at 20 random moments of a
    loop that logs as fast as it can: every complete line parses, and the last step written is within the
    flush interval and one batch of the last call that returned before the kill."""
    env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
    losses = []
    for seed in range(20):
        folder = tmp_path / str(seed)
        folder.mkdir()
        shared = folder / "returned"
        shared.write_bytes(bytes(16))
        child = subprocess.Popen([sys.executable, "-c", ASYNC_TRAINING, str(folder / "runs"), str(shared)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        experiment_id = child.stdout.readline().strip()
        time.sleep(random.Random(seed).uniform(0.2, 1.0))  # the moment of the kill, not a synchronisation
        child.kill()
        child.wait()
        child.stdout.close()
        last_step, returned_ns = struct.unpack("<qq", shared.read_bytes())
        raw = (folder / "runs" / experiment_id / "events.jsonl").read_bytes()
        lines = raw.split(b"\n")
        records = [json.loads(line) for line in lines[:-1]]  # every complete line; a torn tail at most
        steps = [r for r in records if r["kind"] == "training_step"]
        assert steps and steps[-1]["step"] <= last_step
        losses.append((returned_ns - steps[-1]["time_unix_nano"]) / 1e9)
    assert max(losses) <= FLUSH_INTERVAL_S + ONE_BATCH_S, [f"{loss:.3f}" for loss in losses]
