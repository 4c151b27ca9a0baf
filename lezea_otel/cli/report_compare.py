"""The report of several runs at once: their metric curves together (a colour per run, the legend naming
each by its name and short id), what the observers sampled of each, and a table of the runs.

A distributed experiment takes part through its headline run (its lowest rank's latest attempt), which
the table says; curves are by step, the observed resources by seconds since each run's own start."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lezea_otel.analysis.experiment import Experiment
from lezea_otel.analysis.runs import Run
from lezea_otel.cli.report_figures import compared_metric_figures
from lezea_otel.cli.report_html import PALETTE, empty_section, figure_section, page, table
from lezea_otel.cli.report_observed import add_observed, observed_layout, observed_series


def label(run: Run) -> str:
    """What a run is called in legends: its name and the first 8 characters of its id."""
    return f"{run.start.get('name') or '?'} {run.id[:8]}"


def _run_of(target: Run | Experiment) -> tuple[Run, str]:
    if isinstance(target, Run):
        return target, ""
    if target.distributed:
        return target.headline.run, f"{target.headline.label} of {target.world_size} ranks"
    return target.headline.run, ""


def write_compared_report(targets: Sequence[Run | Experiment], output: Path) -> Path:
    import plotly.graph_objects as go

    runs = [_run_of(target) for target in targets]
    labelled = [(label(run), run) for run, _ in runs]
    names = ", ".join(name for name, _ in labelled)
    sections = [f"<h1>{len(runs)} runs compared</h1><p class='meta'>{names}</p>", _runs_table(runs)]
    figures = compared_metric_figures(go, labelled)
    sections += [figure_section(name, figure) for name, figure in figures] or [
        empty_section("metrics", "Metrics", "None of these runs logged a training step.")]
    observed = go.Figure()
    missing = []
    for index, (name, run) in enumerate(labelled):
        found = observed_series(run.path, run.state.start_ns or 0)
        add_observed(go, observed, found, name, PALETTE[index % len(PALETTE)], name)
        if not found.series:
            missing.append(f"{name}: {found.why_none}")
    if observed.data:
        sections.append(figure_section("observed", observed_layout(
            observed, "Observed by the exporters, seconds since each run's start (a colour per run)")))
    if missing:
        sections.append(empty_section("observed-missing", "Runs without observed resources",
                                      " ".join(missing)))
    output.write_text(page(f"{len(runs)} runs: {names}", sections), encoding="utf-8")
    return output


def _runs_table(runs: list[tuple[Run, str]]) -> str:
    rows: list[list[Any]] = []
    for index, (run, part) in enumerate(runs):
        summary = run.summary()
        head = summary.get("headline") or {}
        rows.append([PALETTE[index % len(PALETTE)], run.start.get("name"), run.id[:8], part or "-",
                     summary["status"], summary["duration_s"], summary["steps"]["count"], head.get("key"),
                     head.get("last"), head.get("best"), ", ".join(run.start.get("tags", [])) or "-"])
    return "<section id='runs'>" + table(
        "Runs", ["colour", "name", "id", "part", "status", "duration s", "steps", "headline metric", "last",
                 "best", "tags"], rows, "runs-table") + "</section>"
