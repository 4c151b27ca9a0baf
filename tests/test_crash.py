"""kill -9 at random moments: the audit and the OTLP files parse up to their last complete line,
the run reads as crashed, and its record can still be replayed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lezea_otel.model.audit import read_events
from lezea_otel.model.runs import load_run

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
