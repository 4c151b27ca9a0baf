"""The report shows everything a run has, read in a real headless Chromium: a training with a scope per
epoch, a validation loss logged once per epoch (single points), phases before the step call, what the
exporter's observers sampled, and no reward, cost or comment; and several runs in one report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lezea_otel.analysis.runs import Run, Timed, load_run
from lezea_otel.cli.report import write_report
from lezea_otel.cli.report_phases import RANKED_BY, phase_rows
from lezea_otel.tracker import ExperimentTracker
from tests import test_report_browser

browser = test_report_browser.browser  # the headless Chromium, network cut off

EPOCHS, BATCHES = 3, 10
PHASES = ("data", "forward", "backward")

TRACES = """
const gd = document.getElementById(arguments[0]);
return Array.from(gd.querySelectorAll('g.trace')).map(g => {
  const trace = g.__data__[0].trace;
  return {name: trace.name, type: trace.type, mode: trace.mode || null, points: trace.x.length,
          markers: g.querySelectorAll('.point').length, line: trace.line ? trace.line.dash : null,
          colour: trace.line ? trace.line.color : null};
});
"""
"""Per rendered trace of a plot: its name, and what plotly drew of it (a marker or bar is a path.point)."""


def train(runs: Path, name: str, scale: float = 1.0) -> Path:
    """A scope per epoch; each batch's phases run before its step is logged; one validation loss per
    epoch."""
    tracker = ExperimentTracker(name, runs_dir=runs, tags=["insights"]).start(prometheus_port=None)
    step = 0
    for epoch in range(1, EPOCHS + 1):
        with tracker.builder_scope(f"epoch{epoch}"):
            for _ in range(BATCHES):
                step += 1
                for phase in PHASES:
                    with tracker.span(phase):
                        time.sleep(0.004)  # the phase's work: what the timeline draws (no synchronisation)
                tracker.log_training_step(step, {"loss": scale * 4.0 / step, "lr": 0.1}, data_split="train")
            tracker.log_training_step(step, {"loss": scale * 5.0 / step}, data_split="val")
    tracker.finalize_experiment()
    return Path(tracker.run_dir)


@pytest.fixture
def fast_observers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Observers sampling every 100 ms, exported as often, from an exporter thread (an exporter process
    would take longer to start than these runs last)."""
    monkeypatch.setenv("LEZEA_EXPORTER", "thread")
    monkeypatch.setenv("LEZEA_OBSERVE_INTERVAL", "0.1")
    monkeypatch.setenv("LEZEA_METRIC_EXPORT_INTERVAL_MS", "100")


def traces(browser: Any, plot: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = browser.execute_script(TRACES, f"plot-{plot}")
    return found


def open_report(browser: Any, path: Path) -> list[str]:
    """The report loaded; the ids of its plots, each checked to have rendered with data."""
    browser.get(path.as_uri())
    browser.implicitly_wait(10)
    plots: list[str] = browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => p.id)")
    for plot in plots:
        drawn = traces(browser, plot.removeprefix("plot-"))
        assert drawn and all(t["points"] > 0 for t in drawn), (plot, drawn)
        assert all(t["markers"] > 0 or t["mode"] == "lines" for t in drawn), (plot, drawn)
    return plots


def test_report_draws_single_points_observed_resources_and_phases_per_step(browser, tmp_path,
                                                                            fast_observers):
    run_dir = train(tmp_path / "runs", "insights")
    report = write_report(load_run(run_dir), tmp_path / "report.html")
    plots = open_report(browser, report)
    assert {"plot-metric-loss", "plot-metric-lr", "plot-observed", "plot-timeline"} <= set(plots)

    loss = {t["name"]: t for t in traces(browser, "metric-loss")}
    for epoch in range(1, EPOCHS + 1):
        val, trained = loss[f"builder:epoch{epoch}/val"], loss[f"builder:epoch{epoch}/train"]
        assert val["points"] == 1 and val["markers"] == 1  # the lone validation point is drawn
        assert trained["points"] == BATCHES and trained["markers"] == BATCHES
        assert val["line"] != trained["line"] and val["colour"] == trained["colour"]  # a dash per split
    assert len({loss[f"builder:epoch{e}/train"]["colour"] for e in range(1, EPOCHS + 1)}) == EPOCHS

    observed = {t["name"]: t for t in traces(browser, "observed")}
    assert observed["process tree RSS MiB"]["points"] >= 2  # over time, not the last sample alone
    assert observed["process tree CPU %"]["points"] >= 1 and "host CPU %" in observed
    rss = browser.execute_script("return document.getElementById('plot-observed').data"
                                 ".find(t => t.name === 'process tree RSS MiB').y")
    assert all(10 < value < 10_000 for value in rss)  # a Python process's RSS, in MiB

    bars = traces(browser, "timeline")
    assert [t["name"] for t in bars] == list(PHASES) and all(t["markers"] == 12 for t in bars)
    rows = browser.execute_script("return document.getElementById('plot-timeline').data[0].y")
    assert rows == [f"step {s}" for s in range(EPOCHS * BATCHES - 11, EPOCHS * BATCHES + 1)]

    tables = browser.find_element("id", "tables").text
    for sentence in ("No rewards were logged.", "No cost was logged.", "No comment or conclusion was logged.",
                     "No checkpoint was logged.", "No phase measured GPU time"):
        assert sentence in tables
    assert not browser.find_elements("css selector", "#rewards-table tr, #cost-table tr, #comments-table tr")
    assert "No resources were logged" in browser.find_element("id", "resources").text
    assert RANKED_BY in tables
    phases = {row.find_elements("tag name", "td")[1].text: row.find_elements("tag name", "td")[2].text
              for row in browser.find_elements("css selector", "#phases-table tbody tr")}
    assert phases["data"] == phases["forward"] == str(EPOCHS * BATCHES)
    meta = browser.find_element("css selector", "p.meta").text
    assert f"{EPOCHS * BATCHES} steps ({EPOCHS} val calls)" in meta
    assert f"builder:epoch{EPOCHS}/train/loss {4.0 / (EPOCHS * BATCHES):.4g}" in meta
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_report_of_several_runs_draws_each_runs_curves(browser, tmp_path, fast_observers):
    runs = [load_run(train(tmp_path / "runs", name, scale)) for name, scale in (("first", 1.0),
                                                                                ("second", 2.0))]
    report = write_report(runs, tmp_path / "compare.html")
    plots = open_report(browser, report)
    assert {"plot-metric-loss", "plot-observed"} <= set(plots)
    loss = traces(browser, "metric-loss")
    labels = [f"{run.start['name']} {run.id[:8]}" for run in runs]
    for label in labels:
        mine = [t for t in loss if t["name"].startswith(label + " ")]
        assert len(mine) == 2 * EPOCHS and len({t["colour"] for t in mine}) == 1, label
    assert len({t["colour"] for t in loss}) == 2
    last = browser.execute_script(
        "return document.getElementById('plot-metric-loss').data.filter(t => t.name.endsWith('epoch3/train'))"
        ".map(t => t.y[t.y.length - 1])")
    assert last == pytest.approx([4.0 / 30, 8.0 / 30])
    rows = [row.text for row in browser.find_elements("css selector", "#runs-table tbody tr")]
    assert len(rows) == 2 and all(run.id[:8] in row for run, row in zip(runs, rows, strict=True))
    observed = {t["name"] for t in traces(browser, "observed")}
    assert {f"{label} process tree RSS MiB" for label in labels} <= observed
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    single = write_report(runs[:1], tmp_path / "one.html").read_text()
    assert "runs-table" not in single and 'id="plot-timeline"' in single


def test_observed_section_says_why_when_nothing_sampled(tmp_path, monkeypatch):
    """With no exporter (``LEZEA_EXPORTER=none``) nothing sampled the run: said in one line, no plot."""
    monkeypatch.setenv("LEZEA_EXPORTER", "none")
    tracker = ExperimentTracker("audit-only", runs_dir=tmp_path / "runs").start(prometheus_port=None)
    tracker.log_training_step(1, {"loss": 1.0})
    tracker.finalize_experiment()
    text = write_report(load_run(Path(tracker.run_dir)), tmp_path / "report.html").read_text()
    assert "No observer samples: the run has no otlp/metrics.jsonl" in text
    assert 'id="plot-observed"' not in text and 'id="plot-metric-loss"' in text
    assert "No phase was timed" in text


def test_phase_table_puts_gpu_time_beside_the_hosts():
    """GPU time (CUDA events) next to the host's wall-clock time, the table ranked by the latter."""
    def timed(name: str, wall: float, gpu: float | None) -> Timed:
        return Timed(name, "phase", wall, 1, None, None, None, gpu_duration_s=gpu)

    items = [timed("forward", 0.2, 0.15), timed("forward", 0.4, 0.35), timed("data", 1.0, None)]
    columns, rows = phase_rows(items, {"forward": {"cpu.seconds": 0.5, "memory.peak": 2 * 2**20}})
    assert columns[7:9] == ["GPU total s", "GPU p50 s"]
    assert [row[1] for row in rows] == ["data", "forward"]  # by wall-clock total: 1.0 s, then 0.6 s
    assert rows[1][7] == pytest.approx(0.5) and rows[1][8] == pytest.approx(0.15)
    assert rows[1][9:] == [0.5, 2.0] and rows[0][7:] == [None, None, None, None]
    _, plain = phase_rows(items[2:], {})
    assert len(plain[0]) == 9  # no GPU column when no phase measured one


def test_a_list_of_one_run_is_its_own_report(tmp_path):
    tracker = ExperimentTracker("lone", runs_dir=tmp_path / "runs").start(prometheus_port=None)
    tracker.log_training_step(1, {"loss": 1.0})
    tracker.finalize_experiment()
    run: Run = load_run(Path(tracker.run_dir))
    assert write_report([run], tmp_path / "a.html").read_text().count("<h1>lone</h1>") == 1
