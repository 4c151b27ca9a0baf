"""One self-contained HTML report: plotly figures with plotly.js embedded once, no CDN. Of one run; of a
distributed experiment, its ranks merged (``report_ranks``); of several runs, their curves together
(``report_compare``).

A run's report shows everything its folder holds: a figure per metric (a line per scope and split,
markers on short series), what the exporter's observers sampled over time (``report_observed``), what the
user logged with ``log_resource``, the phases of the last steps as a timeline (``report_phases``), and
tables; a section with nothing in it says so in one line.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lezea_otel.analysis.experiment import Experiment
from lezea_otel.analysis.runs import Run
from lezea_otel.cli.report_figures import (
    MAX_METRIC_PLOTS,
    logged_resource_figure,
    metric_figures,
    resource_series,
)
from lezea_otel.cli.report_html import empty_section, figure_section, fmt, page, slug, table
from lezea_otel.cli.report_observed import add_observed, observed_layout, observed_series
from lezea_otel.cli.report_phases import gpu_note, phase_table, scope_timeline, step_timeline

__all__ = ["MAX_METRIC_PLOTS", "page", "resource_series", "slug", "table", "write_report"]

Target = Run | Experiment


def write_report(target: Target | Sequence[Target], output: Path) -> Path:
    """The report of a run; of an experiment: its ranks merged when it is a distributed one opened whole,
    otherwise its headline run's (a lone run, one rank's folder, a lone run's latest attempt); of a list
    of several: their curves together and a table of them (a list of one: that one's report)."""
    if not isinstance(target, (Run, Experiment)):
        targets = list(target)
        if len(targets) != 1:
            from lezea_otel.cli.report_compare import write_compared_report

            return write_compared_report(targets, output)
        target = targets[0]
    if isinstance(target, Experiment):
        if target.distributed and not target.partial:
            from lezea_otel.cli.report_ranks import write_experiment_report

            return write_experiment_report(target, output)
        target = target.headline.run
    output.write_text(page(str(target.start.get("name") or target.id), run_sections(target)),
                      encoding="utf-8")
    return output


def run_sections(run: Run) -> list[str]:
    import plotly.graph_objects as go

    summary = run.summary()
    sections: list[str] = [header(run, summary), _advice(run)]
    figures = metric_figures(go, run)
    sections += [figure_section(name, figure) for name, figure in figures] or [
        empty_section("metrics", "Metrics", "No training step was logged: there is no curve to draw.")]
    observed = observed_series(run.path, run.state.start_ns or 0)
    if observed.series:
        figure = go.Figure()
        add_observed(go, figure, observed)
        sections.append(figure_section("observed", observed_layout(
            figure, "Observed by the exporter (process tree, host, GPUs): a point per metric export")))
    else:
        sections.append(empty_section("observed", "Observed resources", observed.why_none))
    logged = logged_resource_figure(go, run)
    sections.append(figure_section("resources", logged) if logged is not None else empty_section(
        "resources", "Resources logged by the run", "No resources were logged (log_resource / "
        "log_component_resources); the observed resources are above."))
    timeline = step_timeline(go, run)
    sections.append(figure_section("timeline", timeline) if timeline is not None else empty_section(
        "timeline", "Phases per step", "No phase was timed (tracker.span)."))
    scopes = scope_timeline(go, run)
    if scopes is not None:
        sections.append(figure_section("scopes", scopes))
    sections.append(_tables(run, summary))
    return sections


def header(run: Run, summary: dict[str, Any]) -> str:
    """Name, id, status, duration, steps (per split when there are several), the headline metric, tags."""
    tags = ", ".join(run.start.get("tags", [])) or "-"
    name = str(run.start.get("name") or "?")
    steps = summary["steps"]
    evals = {split: n for split, n in (steps.get("splits") or {}).items() if split != "train"}
    counted = f"{steps['count']} steps" + (" (" + ", ".join(f"{n} {s} calls" for s, n in evals.items()) + ")"
                                           if evals else "")
    head = summary.get("headline")
    headline = ""
    if head:
        best = f" (best {fmt(head['best'])} at step {head['best_step']})" if head.get("best") is not None \
            else ""
        headline = f" · {html.escape(head['key'])} <b>{html.escape(fmt(head['last']))}</b>{html.escape(best)}"
    return (f"<h1>{html.escape(name)}</h1><p class='meta'>id {html.escape(run.id)} · "
            f"status <b>{html.escape(summary['status'])}</b> · {summary['duration_s']:.1f} s · "
            f"{html.escape(counted)}{headline} · purpose {html.escape(run.start.get('purpose') or '-')} · "
            f"tags {html.escape(tags)}</p>")


def evidence_text(evidence: dict[str, Any]) -> str:
    """The numbers a recommendation rests on, ``key=value``, as the model gives them."""
    return ", ".join(f"{key}={fmt(value)}" for key, value in evidence.items()
                     if isinstance(value, (int, float, str)) and not isinstance(value, bool))


def _advice(run: Run) -> str:
    rows = [[r["severity"], r["message"], evidence_text(r.get("evidence") or {})]
            for r in run.recommendations()]
    return "<section id='advice'>" + table("Recommendations", ["severity", "advice", "evidence"], rows,
                                           "recommendations-table",
                                           empty="Nothing to flag: no recommendation applies.") + "</section>"


def _tables(run: Run, summary: dict[str, Any]) -> str:
    comments = [["comment", c] for c in summary["comments"]]
    comments += [["conclusion", summary["conclusion"]]] if summary["conclusion"] else []
    cost = {k: v for k, v in summary["cost"].items() if not (k == "total_eur" and not v)}
    parts = [
        table("Metrics", ["key", "goal", "count", "last", "best", "min", "max", "non-finite"],
              [[k, s.get("goal"), s["count"], s["last"], s["best"], s["min"], s["max"], s["nonfinite"]]
               for k, s in summary["metrics"].items()], "metrics-table", empty="No metric was logged."),
        phase_table(run, summary), gpu_note(run),
        table("Configuration", ["key", "value"], [[k, v] for k, v in summary["config"].items()],
              "config-table", empty="No configuration was logged."),
        table("Checkpoints", ["step", "path", "size bytes", "sha256"],
              [[c.get("step"), c.get("path"), c.get("size_bytes"), c.get("sha256")]
               for c in summary["checkpoints"]], "checkpoints-table", empty="No checkpoint was logged."),
        table("Rewards", ["agent", "last", "best", "count"],
              [[k, s["last"], s["best"], s["count"]] for k, s in summary["rewards"].items()],
              "rewards-table", empty="No rewards were logged."),
        table("Cost", ["kind", "value"], [[k, v] for k, v in cost.items()], "cost-table",
              empty="No cost was logged."),
        table("Comments and conclusion", ["kind", "text"], comments, "comments-table",
              empty="No comment or conclusion was logged."),
    ]
    return "<section id='tables'>" + "".join(parts) + "</section>"
