"""The merged report and the advice of a distributed run: three ranks as real processes with a torchrun
environment, rank 1 slow in its ``data`` phase (an environment variable), rank 2 hung after 10 steps while
the others go on, then SIGKILLed. The report is read in a real headless Chromium, the network cut off."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lezea_otel import semconv as names
from lezea_otel.analysis.experiment import load_experiment
from lezea_otel.analysis.runs import run_folders
from lezea_otel.analysis.timing import rank_slow_table
from lezea_otel.cli.common import load
from lezea_otel.cli.report import write_report
from tests import test_report_browser
from tests.test_cli_ranks import invoke, launch_env

browser = test_report_browser.browser  # the headless Chromium of the single-run report's test

TRAINER = r"""
import os, sys, time
from lezea_otel import ExperimentTracker

runs, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rank, pause = int(os.environ["RANK"]), float(os.environ["DATA_PAUSE_S"])
tracker = ExperimentTracker("ranks-report", runs_dir=runs).start(prometheus_port=None)
print("started", flush=True)
if mode == "gate":
    sys.stdin.readline()  # the test says when this rank may step
for step in range(1, steps + 1):
    with tracker.span("data"):
        time.sleep(pause)  # the work of the phase: rank 1's is longer (this is no synchronisation)
    with tracker.span("forward"):
        loss = (1 + rank) / step
    tracker.log_training_step(step, {"loss": loss})  # in no phase: the hung rank fsyncs it
    if step % 5 == 1:
        tracker.log_component_resources("loader", "dataloader", cpu_percent=10.0 * (rank + 1),
                                        memory_mb=100.0 * (rank + 1))
print("ready", flush=True)
if mode == "hang":
    sys.stdin.readline()  # alive and silent, as a rank stuck in a collective (until it is SIGKILLed)
tracker.finalize_experiment()
"""
STEPS, HUNG_STEPS, SLOW_S, FAST_S = 30, 10, 0.08, 0.01
"""Ranks 0 and 1 step 30 times, rank 2 10 times before it hangs; rank 1's data phase takes 80 ms (at least
2.4 s of steps after rank 2 went silent, and slower than a step of rank 2 with its fsyncs on a busy disk),
the others' 10 ms."""


def start(runs: Path, rank: int, steps: int, mode: str, pause: float, exporter: str) -> subprocess.Popen[str]:
    """A rank; only the one that hangs fsyncs each line (it is read while alive, and SIGKILLed): the
    others' steps cost what a rank's usually do, so their step rates differ by their data phase alone."""
    env = {**launch_env(rank, 3, "launch-report", exporter), "DATA_PAUSE_S": str(pause)}
    env["LEZEA_AUDIT_FSYNC"] = "always" if mode == "hang" else "interval"
    process = subprocess.Popen([sys.executable, "-c", TRAINER, str(runs), str(steps), mode], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "started"
    return process


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory) -> dict[str, Any]:
    """Ranks 0 and 1 start and wait; rank 2 starts, steps 10 times and hangs; then ranks 0 and 1 step and
    finish (what the advice and `show` said then); then rank 2 is SIGKILLed (the advice, `show` and the
    report after). Each rank steps while no other starts: the step rates are the ranks' own."""
    runs = tmp_path_factory.mktemp("ranks") / "runs"
    ranks = [start(runs, 0, STEPS, "gate", FAST_S, "thread"), start(runs, 1, STEPS, "gate", SLOW_S, "none")]
    try:
        hung = start(runs, 2, HUNG_STEPS, "hang", FAST_S, "none")
        ranks.append(hung)
        assert hung.stdout is not None and hung.stdout.readline().strip() == "ready"
        for process in ranks[:2]:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in ranks[:2]:
            out, _ = process.communicate(timeout=30)
            assert process.returncode == 0 and out.strip() == "ready"
        (folder,) = run_folders(runs)
        seen: dict[str, Any] = {"dir": runs, "folder": folder, "pid": hung.pid,
                                "hung_status": load_experiment(folder).status,
                                "hung_advice": load_experiment(folder).recommendations(),
                                "hung_show": invoke("show", folder.name, "--runs-dir", str(runs))}
        hung.send_signal(signal.SIGKILL)
        hung.wait(10)  # reaped: its pid is gone, as a dead rank's is
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
    experiment = load_experiment(folder)
    seen.update(experiment=experiment, advice=experiment.recommendations(),
                show=invoke("show", folder.name[:8], "--runs-dir", str(runs)))
    return seen


def by_rule(advice: list[dict[str, Any]], rule: str) -> dict[int, dict[str, Any]]:
    return {item["evidence"]["rank"]: item for item in advice if item["rule"] == rule}


def test_hung_rank_stopped_reporting(three_ranks):
    """Alive, no end record, its last record 2.4 s and more older than rank 1's newest: named, with its
    numbers and its pid; `show` prints it."""
    assert three_ranks["hung_status"] == "running"
    (silent,) = by_rule(three_ranks["hung_advice"], "rank_silent").values()
    evidence = silent["evidence"]
    assert evidence["rank"] == 2 and evidence["status"] == "running" and evidence["last_step"] == HUNG_STEPS
    assert evidence["newest_rank"] == 1 and evidence["lag_s"] >= STEPS * SLOW_S
    assert evidence["pid"] == three_ranks["pid"]
    assert "rank 2 stopped reporting: its last record (step 10, " in silent["message"]
    assert f"is {evidence['lag_s']:.1f} s older than rank 1's newest (step {STEPS})" in silent["message"]
    assert f"pid {three_ranks['pid']}" in silent["message"]
    assert "[warning] rank 2 stopped reporting" in three_ranks["hung_show"]
    assert not by_rule(three_ranks["hung_advice"], "rank_ended")  # nobody died yet


def test_dead_rank_and_straggler_named_with_their_numbers(three_ranks):
    experiment, advice = three_ranks["experiment"], three_ranks["advice"]
    assert not by_rule(advice, "rank_silent")  # the hung rank is dead now: said as such instead
    dead = by_rule(advice, "rank_ended")
    assert list(dead) == [2] and dead[2]["severity"] == "critical"
    evidence = dead[2]["evidence"]
    assert evidence["last_step"] == HUNG_STEPS and evidence["others_last_step"] == {0: STEPS, 1: STEPS}
    assert dead[2]["message"].startswith("rank 2: The run stopped without an end record after step 10")
    assert "The other ranks went on: rank 0 to step 30 (finished), rank 1 to step 30 (finished)." in (
        dead[2]["message"])
    slow = by_rule(advice, "straggler")
    assert list(slow) == [1]
    measures = {m["by"]: m for m in slow[1]["evidence"]["measures"]}
    p50 = {row["rank"]: row["p50_s"] for row in rank_slow_table(experiment.timed_by_rank())
           if row["name"] == "data"}
    assert measures["data"]["value"] == p50[1] >= SLOW_S and measures["data"]["median"] < p50[1] / 2
    assert f"phase 'data' p50 {p50[1]:.4g} s" in slow[1]["message"]
    rates = {row.rank: row.step_rate for row in experiment.rank_rows()}
    assert measures["step rate"]["value"] == rates[1] == min(rates.values())
    assert f"{rates[1]:.3g} steps/s" in slow[1]["message"]
    out = three_ranks["show"]
    assert "[critical] rank 2: The run stopped without an end record after step 10" in out
    assert "[warning] rank 1 is a straggler: " in out


def cells(browser, table_id: str) -> list[list[str]]:
    return browser.execute_script(
        f"return [...document.querySelectorAll('#{table_id} tbody tr')]"
        ".map(tr => [...tr.cells].map(td => td.innerText))")


def plot(browser, name: str) -> list[dict[str, Any]]:
    """The traces of a plot as drawn: name, points and bar colours."""
    element = browser.find_element("id", f"plot-{name}")
    assert element.size["height"] > 100 and element.find_elements("css selector", "svg.main-svg"), name
    return browser.execute_script(
        f"return document.getElementById('plot-{name}').data.map(t => ({{name: t.name, x: [...t.x], "
        "y: [...t.y], colours: t.marker && t.marker.color}))")


def test_report_merges_the_ranks_in_chromium(three_ranks, browser, tmp_path):
    """`lezea-otel report` of the experiment: a row per rank, a curve per rank, the stragglers, per-rank
    phases and resources, the advice; drawn offline with no console error."""
    runs, folder = three_ranks["dir"], three_ranks["folder"]
    report = write_report(load(folder.name[:8], str(runs)), tmp_path / "report.html")
    browser.get(report.as_uri())
    browser.implicitly_wait(10)
    assert "3 ranks: 2 finished, 1 crashed" in browser.find_element("css selector", "p.meta").text
    ranks = {row[0]: row for row in cells(browser, "ranks-table")}
    assert [ranks[r][3:6] for r in "012"] == [["finished", "30", "30"], ["finished", "30", "30"],
                                              ["crashed", "10", "10"]]
    assert [ranks[r][7] for r in "012"] == ["0.03333", "0.06667", "0.3"]  # last loss: (1 + rank) / step
    loss = plot(browser, "metric-loss")
    assert [(t["name"], len(t["x"])) for t in loss] == [("rank 0", 30), ("rank 1", 30), ("rank 2", 10)]
    assert loss[1]["y"][-1] == pytest.approx(2 / 30)
    stragglers = {row[0]: row for row in cells(browser, "stragglers-table")}
    assert stragglers["data"][1:3] == ["phase", "1"] and stragglers["data"][7] == "yes"
    assert stragglers["step rate"][2] == "1" and stragglers["last step"][2:4] == ["2", "step 10"]
    assert stragglers["last step"][6] == "20 steps behind"
    rates = plot(browser, "step-rate")[0]
    assert rates["x"] == ["rank 0", "rank 1", "rank 2"] and rates["colours"][1] != rates["colours"][0]
    phases = plot(browser, "phases")
    assert [t["name"] for t in phases] == ["rank 0", "rank 1", "rank 2"]
    data = {t["name"]: t["y"][t["x"].index("data")] for t in phases}
    assert data["rank 1"] >= SLOW_S > data["rank 0"]
    phase_rows = {(row[1], row[2]): row for row in cells(browser, "phases-table")}
    assert phase_rows[("data", "1")][3] == "30" and phase_rows[("data", "2")][3] == "10"
    assert float(phase_rows[("data", "1")][5]) == pytest.approx(data["rank 1"], rel=1e-3)
    resources = {row[0]: row for row in cells(browser, "resources-table")}
    assert [resources[r][1:3] + resources[r][6:] for r in "012"] == [
        ["loader", "6", "100"], ["loader", "6", "200"], ["loader", "2", "300"]]
    assert len(plot(browser, "resources")) == 6  # cpu and memory of each rank's loader
    (observed,) = cells(browser, "observed-table")  # rank 0 alone ran an exporter, whose observers sampled
    assert observed[0] == "0" and float(observed[3]) > 10  # peak RSS in MiB of a Python process
    sampled = {t["name"]: t["y"] for t in plot(browser, "observed")}  # its samples over time, rank 0's alone
    assert {name.split(" ", 2)[1] for name in sampled} == {"0"} and sampled["rank 0 process tree RSS MiB"]
    assert all(value > 10 for value in sampled["rank 0 process tree RSS MiB"])
    advice = {row[2] for row in cells(browser, "recommendations-table")}
    assert three_ranks["advice"][0]["message"] in advice  # the dead rank, as `show` said it
    assert any(text.startswith("rank 1 is a straggler: phase 'data' p50") for text in advice)
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert browser.save_screenshot(str(tmp_path / "report.png"))


def test_a_rank_folder_reports_that_rank_alone(three_ranks, tmp_path):
    """A path to runs/<id>/rank-1 is rank 1's own report, as a lone run's; no merged tables."""
    folder = three_ranks["folder"] / names.RANK_DIR.format(rank=1)
    text = write_report(load(str(folder), str(three_ranks["dir"])), tmp_path / "rank1.html").read_text()
    assert "ranks-table" not in text and 'id="plot-timeline"' in text
    assert "30 steps" in text and "status <b>finished</b>" in text
