"""Summaries a researcher can trust: the headline metric, training steps, metric goals, trends and errors.

A run with a scope per epoch, training steps and a validation call per epoch: the closing line, the
summary, ``lezea-otel runs`` and ``lezea-otel show`` all name the latest epoch's training loss with its
own best, and count training steps only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lezea_otel.cli import main as cli
from lezea_otel.cli.show import error_line, trend

TRAIN = {0: [7.0, 6.5, 6.4], 1: [6.3, 5.9, 6.1], 2: [6.0, 5.95, 6.2]}
"""Training losses per epoch: the first scope's loss (6.4) and the run's overall best (5.9) are both
wrong answers for the headline, which is epoch 2's last loss 6.2 with epoch 2's best 5.95."""
VAL = {0: 6.8, 1: 6.0, 2: 5.0}

SCRIPT = textwrap.dedent("""
    import json, sys
    from lezea_otel import ExperimentTracker

    train, val = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    tracker = ExperimentTracker("epochs", purpose="summaries", runs_dir=sys.argv[1])
    tracker.start(prometheus_port=None)
    step = 0
    for epoch in range(3):
        with tracker.builder_scope(f"epoch{epoch}"):
            for loss in train[str(epoch)]:
                step += 1
                tracker.log_training_step(step, {"loss": loss, "lr": 0.1 / step})
            tracker.log_training_step(step, {"loss": val[str(epoch)]}, data_split="val")
    summary = tracker.get_experiment_summary()
    tracker.end()
    print(json.dumps({"id": tracker.experiment_id, "steps": summary["steps"],
                      "headline": summary["headline"], "metrics": summary["metrics"]}))
""")


@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory) -> tuple[Path, dict[str, Any], str]:
    """The run, made by a real process: (runs folder, what its summary said, its stderr)."""
    runs = tmp_path_factory.mktemp("summaries") / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
    env["LEZEA_PROMETHEUS_PORT"] = "0"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(runs), json.dumps(TRAIN), json.dumps(VAL)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return runs, json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_the_closing_line_names_the_latest_epochs_loss_and_counts_training_steps(epoch_run) -> None:
    _, _, stderr = epoch_run
    (line,) = [line for line in stderr.splitlines() if "experiment 'epochs' finished" in line]
    assert "9 steps (3 val calls)" in line
    assert "builder:epoch2/loss 6.2 (best 5.95)" in line
    assert "epoch0" not in line


def test_the_summary_agrees(epoch_run) -> None:
    _, summary, _ = epoch_run
    assert summary["steps"] == {"count": 9, "first": 1, "last": 9, "splits": {"train": 9, "val": 3}}
    head = summary["headline"]
    assert (head["key"], head["last"], head["best"], head["best_step"], head["goal"]) == (
        "builder:epoch2/loss", 6.2, 5.95, 8, "min")
    assert summary["metrics"]["builder:epoch2/val/loss"]["best"] == 5.0


def test_a_key_whose_name_states_no_goal_gets_no_best(epoch_run) -> None:
    """The learning rate has no "best": neither its maximum nor its minimum is invented as one."""
    _, summary, _ = epoch_run
    lr = summary["metrics"]["builder:epoch0/lr"]
    assert (lr["goal"], lr["best"], lr["best_step"]) == (None, None, None)
    assert lr["max"] == 0.1


def test_runs_and_show_agree_with_the_summary(epoch_run) -> None:
    runs, summary, _ = epoch_run
    listed = CliRunner().invoke(cli, ["runs", str(runs)])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if summary["id"][:8] in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[-5:-2] == ["9", "6.2", "5.95"]  # steps, last loss, best loss (then delivery)

    shown = CliRunner().invoke(cli, ["show", summary["id"], "--runs-dir", str(runs)])
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "9 steps (last step 9; 3 val calls)" in out
    assert "headline: builder:epoch2/loss 6.2 (best 5.95)" in out
    lr_row = next(line for line in out.splitlines() if "builder:epoch0/lr " in line)
    cells = [cell.strip() for cell in lr_row.split("│")]
    assert cells[4:6] == ["-", "-"]  # best, goal


class TestDefineMetric:
    def test_a_declared_goal_decides_best_even_when_declared_late(self, tracker) -> None:
        for step, lr in enumerate((0.3, 0.1, 0.2), start=1):
            tracker.log_training_step(step, {"lr": lr, "score": 10.0 * step})
        tracker.define_metric("lr", goal="min")
        metrics = tracker.get_experiment_summary()["metrics"]
        assert (metrics["lr"]["goal"], metrics["lr"]["best"], metrics["lr"]["best_step"]) == ("min", 0.1, 2)
        assert metrics["score"]["goal"] is None and metrics["score"]["best"] is None

    def test_a_declared_key_is_the_headline_with_its_summary(self, tracker) -> None:
        tracker.define_metric("val/*", goal="maximize", summary="best")
        with tracker.builder_scope("a"):
            tracker.log_training_step(1, {"loss": 1.0, "val/score": 0.5})
            tracker.log_training_step(2, {"loss": 0.9, "val/score": 0.7})
            tracker.log_training_step(3, {"loss": 0.8, "val/score": 0.6})
        summary = tracker.get_experiment_summary()
        score = summary["metrics"]["builder:a/val/score"]
        assert (score["goal"], score["best"], score["summary"]) == ("max", 0.7, {"of": "best", "value": 0.7})
        assert summary["headline"]["key"] == "builder:a/val/score"
        assert summary["metrics"]["builder:a/loss"]["goal"] == "min"

    def test_the_declaration_is_in_the_audit_so_show_agrees(self, tracker) -> None:
        tracker.define_metric("lr", goal="min", summary="last")
        tracker.log_training_step(1, {"lr": 0.2})
        tracker.log_training_step(2, {"lr": 0.1})
        tracker.finalize_experiment()
        shown = CliRunner().invoke(cli, ["show", str(tracker.run_dir)])
        assert shown.exit_code == 0, shown.output
        assert "headline: lr 0.1 (best 0.1)" in shown.output

    def test_bad_arguments_warn_once_and_never_raise(self, tracker) -> None:
        tracker.define_metric("loss", goal="up")
        tracker.define_metric("loss", goal="up")
        tracker.define_metric(3)  # type: ignore[arg-type]
        tracker.define_metric("acc", summary="median")
        tracker.log_training_step(1, {"loss": 1.0, "acc": 0.5})
        summary = tracker.get_experiment_summary()
        messages = [m for m in summary["warnings"]["messages"] if "define_metric" in m]
        assert len(messages) == 3, messages
        assert any("goal must be 'min', 'max' or None, got 'up'" in m for m in messages)
        assert any("summary must be one of" in m and "'median'" in m for m in messages)
        assert summary["metrics"]["loss"]["goal"] == "min"  # the bad goal left the name's goal
        assert "summary" not in summary["metrics"]["acc"]


@pytest.mark.parametrize(("values", "expected"), [
    ([1.0, 1.0, 0.5, 0.5], "down 50%"),
    ([0.0, 0.0, -0.1, -0.1], "down by 0.1"),
    ([0.01, 0.01, -0.001, -0.001], "down by 0.011"),  # a percentage would read "down 110%"
    ([2.0, 2.0, 2.0, 2.0], "flat"),
])
def test_trends_near_zero_are_absolute(values, expected) -> None:
    assert trend(list(enumerate(values))) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("KeyboardInterrupt: ", "KeyboardInterrupt"),
    ("KeyboardInterrupt", "KeyboardInterrupt"),
    ("ValueError: ValueError: bad", "ValueError: bad"),
    ("ValueError: bad: worse", "ValueError: bad: worse"),
])
def test_an_error_names_its_type_once(text, expected) -> None:
    assert error_line(text) == expected
