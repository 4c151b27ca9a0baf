"""Runs compared and found: `compare`, the filters and tags of `runs`, `--json` on `runs`, `show`, `slow` and
`compare`, GPU time in `slow` and `show`, and `report` over several runs, on runs the tracker wrote (three
processes: two finish, one fails with an exception) with different configs and tags, a validation split,
phases before and after the step call, and a declared metric goal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from lezea_otel.analysis.compare import config_differences, ranked_by, timed_rows
from lezea_otel.analysis.runs import Timed
from lezea_otel.cli import main as cli
from lezea_otel.cli.merged import EPOCH, parse_since
from lezea_otel.cli.output import print_json

from .test_cli_ranks import row_of, table_rows

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from lezea_otel import ExperimentTracker

    runs, name, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    tracker = ExperimentTracker(name, purpose="compare", tags=spec["tags"], runs_dir=runs)
    tracker.start(prometheus_port=None)
    tracker.log_lezea_config(algorithm_type="SAC", hyperparameters=spec["hyper"], seeds={"torch": 7})
    tracker.define_metric("score", goal="max")  # "score" says no goal by its name: declared here
    for step, (loss, score) in enumerate(zip(spec["loss"], spec["score"]), start=1):
        with tracker.span("data"):
            pass
        with tracker.span("forward"):  # the work of the step, before its step is logged
            time.sleep(0.04 if step == spec["slow_step"] else 0.002)
        tracker.log_training_step(step, {"loss": loss, "score": score, "lr": spec["hyper"]["lr"]})
        with tracker.span("optimizer"):  # after the call: still this step's
            pass
    tracker.log_training_step(len(spec["loss"]), {"loss": spec["val"]}, data_split="val")
    print(json.dumps(tracker.get_experiment_summary(), default=str), flush=True)
    if spec.get("fail"):
        raise RuntimeError("diverged on purpose")
    tracker.finalize_experiment()
""")

RUNS = {
    "Baseline-LR": {"tags": ["sweep", "lr"], "hyper": {"lr": 0.1, "batch": 32}, "slow_step": 3,
                    "loss": [1.0, 0.5, 0.7, 0.6], "score": [0.2, 0.5, 0.4, 0.45], "val": 0.65},
    "tuned-lr": {"tags": ["sweep"], "hyper": {"lr": 0.01, "batch": 32, "warmup": 5}, "slow_step": 1,
                 "loss": [0.9, 0.4, 0.3, 0.35], "score": [0.3, 0.6, 0.7, 0.65], "val": 0.32},
    "broken": {"tags": ["sweep", "bad"], "hyper": {"lr": 1.0, "batch": 32}, "slow_step": 2,
               "loss": [2.0, 3.0], "score": [0.1, 0.05], "val": 2.5, "fail": True},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict[str, Any]:
    """The three runs, written at once by three processes; each one's ``get_experiment_summary()``."""
    runs = tmp_path_factory.mktemp("compare") / "runs"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LEZEA_", "OTEL_"))}
    environment["LEZEA_QUIET"] = "1"
    processes = {name: subprocess.Popen([sys.executable, "-c", SCRIPT, str(runs), name, json.dumps(spec)],
                                        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for name, spec in RUNS.items()}
    summaries = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == (1 if RUNS[name].get("fail") else 0), err
        summaries[name] = json.loads(out.splitlines()[-1])
    ids = {name: summary["experiment"]["id"] for name, summary in summaries.items()}
    return {"dir": runs, "ids": ids, "summaries": summaries}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def cells(output: str, first: str) -> dict[str, str]:
    """The table row whose first cell is ``first``, by column header."""
    header = next(line for line in output.splitlines() if line.startswith("┃"))
    names = [cell.strip() for cell in header.strip().strip("┃").split("┃")]
    return dict(zip(names, row_of(output, first), strict=True))


def as_json(*args: str) -> Any:
    return orjson.loads(invoke(*args, "--json"))


def compare(sweep: dict[str, Any], *names: str, json_out: bool = False) -> Any:
    args = ("compare", *(sweep["ids"][name][:8] for name in names), "--runs-dir", str(sweep["dir"]))
    return as_json(*args) if json_out else invoke(*args)


class TestCompare:
    def test_config_differences_only(self, sweep):
        """Only the keys that differ: lr (0.1 vs 0.01) and warmup (absent vs 5); batch, algorithm and
        seed are the same in both and are counted, not listed."""
        out = compare(sweep, "Baseline-LR", "tuned-lr")
        config = out.split("Config differences (3 keys the same)")[1].split("Metrics")[0]
        rows = {row[0]: row[1:] for row in table_rows(config) if row[0] != "key"}
        assert rows == {"hyperparameters.lr": ["0.1", "0.01"], "hyperparameters.warmup": ["-", "5"]}

    def test_finals_and_bests_side_by_side(self, sweep):
        """Each metric's last value and its best by its goal: the declared "score" (max) first as the
        headline, the loss (min by its name); the learning rate has no goal and so no best."""
        out = compare(sweep, "Baseline-LR", "tuned-lr")
        metrics = out.split("Metrics:")[1].split("Phases:")[0]
        first = next(row for row in table_rows(metrics) if row[0] not in ("key", ""))
        assert first == ["score *", "max", "0.45 (best 0.5)", "0.65 (best 0.7)"]
        assert row_of(metrics, "loss") == ["loss", "min", "0.6 (best 0.5)", "0.35 (best 0.3)"]
        assert row_of(metrics, "val/loss")[2:] == ["0.65 (best 0.65)", "0.32 (best 0.32)"]
        assert row_of(metrics, "lr") == ["lr", "-", "0.1", "0.01"]
        overview = out.split("Runs")[1].split("Config")[0]
        assert row_of(overview, "steps")[1:] == ["4", "4"]
        assert row_of(overview, "tags")[1:] == ["sweep, lr", "sweep"]
        assert row_of(overview, "headline")[1:] == ["score 0.45 (best 0.5)", "score 0.65 (best 0.7)"]

    def test_phases_resources_and_a_failed_run(self, sweep):
        """Three runs (one failed): its status, its shorter run, its phase counts; the observers' CPU
        and peak RSS are there for each, GPU hours are not (no GPU)."""
        out = compare(sweep, "Baseline-LR", "tuned-lr", "broken")
        overview = out.split("Config")[0]
        assert row_of(overview, "status")[1:] == ["finished", "finished", "failed"]
        assert row_of(overview, "steps")[1:] == ["4", "4", "2"]
        phases = out.split("Phases:")[1].split("Resources")[0]
        assert [cell.endswith(f"({n}x)") for cell, n in zip(row_of(phases, "forward")[1:], (4, 4, 2),
                                                               strict=True)] == [True] * 3
        resources = out.split("Resources and cost")[1]
        assert all(float(cell) > 0 for cell in row_of(resources, "peak RSS MiB")[1:])
        assert row_of(resources, "GPU hours")[1:] == ["-", "-", "-"]

    def test_json_agrees_with_the_table_and_the_summary(self, sweep):
        data = compare(sweep, "Baseline-LR", "tuned-lr", json_out=True)
        base, tuned = (sweep["summaries"][name] for name in ("Baseline-LR", "tuned-lr"))
        assert [run["id"] for run in data["runs"]] == [base["experiment"]["id"], tuned["experiment"]["id"]]
        assert data["config"] == {"differences": {"hyperparameters.lr": [0.1, 0.01],
                                                  "hyperparameters.warmup": [None, 5]}, "same": 3}
        metrics = {metric["key"]: metric for metric in data["metrics"]}
        assert data["metrics"][0]["key"] == "score" and data["metrics"][0]["headline"]
        for index, summary in enumerate((base, tuned)):
            for key, stats in summary["metrics"].items():
                cell = metrics[key]["runs"][index]
                assert cell["last"] == stats["last"]
                assert cell["best"] == (stats["best"] if stats["goal"] else None)
            assert data["runs"][index]["steps"] == summary["steps"]["count"]
            assert data["runs"][index]["headline"] == summary["headline"]
        assert metrics["lr"]["runs"] == [{"last": 0.1, "best": None}, {"last": 0.01, "best": None}]
        phases = {phase["name"]: phase["runs"] for phase in data["phases"]}
        assert [cell["count"] for cell in phases["optimizer"]] == [4, 4]

    def test_one_run_is_not_a_comparison(self, sweep):
        result = CliRunner().invoke(cli, ["compare", sweep["ids"]["broken"], "--runs-dir", str(sweep["dir"])])
        assert result.exit_code == 2 and "two runs or more" in result.output


class TestRunsFilters:
    def listed(self, sweep, *args: str) -> list[str]:
        """The names `runs` lists with these filters (from the table)."""
        out = invoke("runs", str(sweep["dir"]), *args)
        return sorted(row[1] for row in table_rows(out) if row[0] != "id")

    def test_name_tag_and_status(self, sweep):
        assert self.listed(sweep, "--name", "LR") == ["Baseline-LR", "tuned-lr"]  # case-insensitive
        assert self.listed(sweep, "--tag", "sweep", "--tag", "lr") == ["Baseline-LR"]  # every tag
        assert self.listed(sweep, "--status", "failed") == ["broken"]
        assert self.listed(sweep, "--status", "failed", "--status", "finished") == sorted(RUNS)
        assert self.listed(sweep, "--since", "2h") == sorted(RUNS)

    def test_since_a_time(self, sweep):
        """An ISO time: the runs that started at or after it."""
        by_start = sorted(as_json("runs", str(sweep["dir"]))["runs"], key=lambda row: row["start_ns"])
        since = EPOCH + timedelta(microseconds=by_start[1]["start_ns"] // 1000)  # at or before its start
        expected = sorted(row["name"] for row in by_start if row["start_ns"] >= by_start[1]["start_ns"])
        assert self.listed(sweep, "--since", since.isoformat()) == expected
        assert by_start[0]["name"] not in expected

    def test_tags_column(self, sweep):
        out = invoke("runs", str(sweep["dir"]))
        assert cells(out, sweep["ids"]["broken"][:8])["tags"] == "sweep, bad"

    def test_nothing_matched_says_so(self, sweep):
        out = invoke("runs", str(sweep["dir"]), "--tag", "nope", "--since", "2999-01-01")
        assert out.count("\n") == 1 and "match tag 'nope', started since 2999-01-01" in out
        assert "(3 runs in all)" in out

    def test_json_has_the_rows_of_the_table(self, sweep):
        data = as_json("runs", str(sweep["dir"]), "--tag", "sweep")
        assert data["total"] == 3 and len(data["runs"]) == 3
        table = invoke("runs", str(sweep["dir"]), "--tag", "sweep")
        for row in data["runs"]:
            shown = cells(table, row["id"][:8])
            assert (shown["name"], shown["status"], shown["steps"]) == (row["name"], row["status"],
                                                                        str(row["steps"]))
            summary = sweep["summaries"][row["name"]]
            assert shown["headline"] == row["headline"]["key"] == summary["headline"]["key"] == "score"
            assert row["headline"]["last"] == summary["headline"]["last"] == float(shown["last"])
            assert row["tags"] == summary["experiment"]["tags"]

    def test_parse_since(self):
        now = 10**18
        assert parse_since("90m", now) == now - 90 * 60 * 10**9
        assert parse_since("1h30m", now) == now - 90 * 60 * 10**9
        assert parse_since("3d", now) == now - 3 * 86400 * 10**9
        assert parse_since("2026-12-01T00:00:00Z") == parse_since("2026-12-01") == 1796083200 * 10**9


class TestShowAndSlowJson:
    def test_show_json_is_the_summary(self, sweep):
        """`show --json` carries what `get_experiment_summary()` said of the run, and what `show`
        prints of it."""
        name = "Baseline-LR"
        summary = sweep["summaries"][name]
        data = as_json("show", sweep["ids"][name], "--runs-dir", str(sweep["dir"]))
        run = data["run"]
        assert run["metrics"] == summary["metrics"] and run["steps"] == summary["steps"]
        assert run["headline"] == summary["headline"] and run["config"] == summary["config"]
        assert run["run"]["tags"] == ["sweep", "lr"] and data["experiment"]["status"] == "finished"
        shown = invoke("show", sweep["ids"][name], "--runs-dir", str(sweep["dir"]))
        assert "tags: sweep, lr" in shown and f"{run['steps']['count']} steps" in shown
        for name, phase in summary["phases"].items():
            assert (run["phases"][name]["count"], run["phases"][name]["total_s"]) == (
                phase["count"], pytest.approx(phase["total_s"]))
            assert "gpu_total_s" not in run["phases"][name]  # no GPU here: no GPU figure

    def test_failed_run_says_its_error_once(self, sweep):
        data = as_json("show", sweep["ids"]["broken"], "--runs-dir", str(sweep["dir"]))
        assert data["run"]["status"] == "failed"
        assert data["run"]["run"]["error"] == "RuntimeError: diverged on purpose"
        shown = invoke("show", sweep["ids"]["broken"], "--runs-dir", str(sweep["dir"]))
        assert shown.count("RuntimeError") == 1 and "error: RuntimeError: diverged on purpose" in shown

    def test_slow_names_the_step_that_was_running(self, sweep):
        """The slowest forward (step 3's sleep) is step 3's, though its step was logged after it; the
        first batch's phases are step 1's; JSON and table agree."""
        args = ("slow", sweep["ids"]["Baseline-LR"], "--runs-dir", str(sweep["dir"]), "--top", "20")
        data, out = as_json(*args), invoke(*args)
        slowest = data["instances"][0]
        assert (slowest["name"], slowest["step"]) == ("forward", 3)
        first = row_of(out.split("Slowest instances")[1], "phase", "forward")
        assert first[3] == "3" and first[4] == slowest["trace_id"]
        optimizer = [i for i in data["instances"] if i["name"] == "optimizer"]
        assert sorted(i["step"] for i in optimizer) == [1, 2, 3, 4]
        assert not data["gpu"] and data["ranked_by"] == "wall" and "GPU" not in out
        rows = {row["name"]: row for row in data["phases"]}
        assert row_of(out.split("Phases by total time")[1], "forward")[1:3] == [
            "4", f"{rows['forward']['total_s']:.3f}"]


def with_gpu_times(sweep, tmp_path, gpu: dict[str, float], skip: str | None = None) -> Path:
    """A copy of the baseline run whose phase records carry ``gpu_duration_s`` (seconds per phase name),
    as CUDA-event timing writes it (but one instance of ``skip``, left without)."""
    source = sweep["dir"] / sweep["ids"]["Baseline-LR"]
    target = tmp_path / "runs" / source.name
    shutil.copytree(source, target)
    lines, skipped = [], False
    for line in (target / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        name = event["data"].get("name")
        if event["kind"] == "phase" and name in gpu:
            if name == skip and not skipped:
                skipped = True
            else:
                event["data"]["gpu_duration_s"] = gpu[name]
        lines.append(json.dumps(event))
    (target / "events.jsonl").write_text("\n".join(lines) + "\n")
    return target


class TestGpuTime:
    def test_slow_ranks_by_gpu_total_when_every_top_instance_has_it(self, sweep, tmp_path):
        """"data" is ~0 s of wall time but 0.5 s on the GPU each: ranked by GPU total it comes first."""
        run = with_gpu_times(sweep, tmp_path, {"data": 0.5, "forward": 0.01, "optimizer": 0.001})
        out = invoke("slow", str(run), "--top", "3")
        assert "Phases ranked by GPU time (CUDA events)" in out
        phases = out.split("Phases by GPU total")[1].split("Scopes")[0]
        assert table_rows(phases)[0][0] == "data"
        assert list(cells(phases, "data").items())[6:] == [
            ("GPU total s", "2.000"), ("GPU p50 s", "0.5000"), ("GPU p95 s", "0.5000")]
        data = as_json("slow", str(run), "--top", "3")
        assert data["ranked_by"] == "gpu" and data["phases"][0]["gpu_total_s"] == 2.0
        assert data["instances"][0]["name"] == "data" and data["instances"][0]["gpu_duration_s"] == 0.5
        shown = invoke("show", str(run))
        assert "phase data: 4x, total" in shown and "GPU total 2.000 s, p50 0.5000 s" in shown

    def test_slow_keeps_wall_time_when_an_instance_has_none(self, sweep, tmp_path):
        run = with_gpu_times(sweep, tmp_path, {"data": 0.5, "forward": 0.01, "optimizer": 0.001},
                             skip="forward")
        out = invoke("slow", str(run), "--top", "3")
        assert "Phases ranked by wall time: not every instance of the top phases has GPU time" in out
        phases = out.split("Phases by total time")[1].split("Scopes")[0]
        assert table_rows(phases)[0][0] == "forward"  # by wall time, as before
        assert cells(phases, "forward")["GPU total s"] == "0.030 (3 of 4)"
        assert "GPU total 0.030 s (of 3)" in invoke("show", str(run))

    def test_the_rule_on_instances(self):
        def phase(name: str, gpu: float | None) -> Timed:
            return Timed(name, "phase", 1.0, None, None, None, None, gpu_duration_s=gpu)

        rows = timed_rows([phase("a", 0.1), phase("a", None), phase("b", 2.0)])
        assert [(r["name"], r["gpu_count"], r["gpu_total_s"]) for r in rows] == [("a", 1, 0.1), ("b", 1, 2.0)]
        assert ranked_by(rows, top=1) == "wall" and ranked_by(rows[1:], top=1) == "gpu"
        assert ranked_by(timed_rows([phase("a", None)]), top=5) is None


def test_config_differences_of_nested_configs():
    differing, same = config_differences([{"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"x": 1, "y": 4}}])
    assert differing == {"a.y": [2, 4], "b": [3, None]} and same == 1


def test_report_of_several_runs(sweep, tmp_path):
    """`report RUN RUN`: one page naming both runs."""
    output = tmp_path / "both.html"
    invoke("report", sweep["ids"]["Baseline-LR"], sweep["ids"]["tuned-lr"], "-o", str(output),
           "--runs-dir", str(sweep["dir"]))
    page = output.read_text()
    assert f"Baseline-LR {sweep['ids']['Baseline-LR'][:8]}" in page
    assert f"tuned-lr {sweep['ids']['tuned-lr'][:8]}" in page


def test_json_numbers_stay_numbers_and_nan_is_null(capsys):
    print_json({"loss": float("nan"), "values": [1, 2.5, float("inf")], "path": Path("/runs/x"), 3: "step"})
    assert json.loads(capsys.readouterr().out) == {"loss": None, "values": [1, 2.5, None], "path": "/runs/x",
                                                  "3": "step"}
