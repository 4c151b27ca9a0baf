"""The report of a distributed experiment: its ranks side by side in one self-contained HTML, as ``show``
and ``slow`` merge them. A row per rank, each metric's curve per rank (legend ``rank r``), steps/s and
phase p50/p95 per rank with the straggler named, per-rank resources (what the user logged, and what each
rank's observers sampled), and the advice the ranks call for.
No rank talked to another; the report only reads their audits (``analysis.experiment``)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from lezea_otel.analysis.experiment import Experiment, Member
from lezea_otel.analysis.timing import STRAGGLER_TOLERANCE, Straggler, rank_slow_table
from lezea_otel.cli.common import when
from lezea_otel.cli.merged import rate
from lezea_otel.cli.report_figures import MARKERS_UP_TO, MAX_METRIC_PLOTS, resource_series, thin
from lezea_otel.cli.report_html import figure_section, page, slug, table
from lezea_otel.cli.report_observed import add_observed, observed_layout, observed_series

MAX_PHASES = 12
"""Scopes and phases in the per-rank plot and table, the longest in total first."""
STRAGGLER_COLOUR, RANK_COLOUR = "#d62728", "#1f77b4"
RANK_COLOURS = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
                "#FF97FF", "#FECB52")
"""plotly's own colours, one per rank in every figure (a rank's scoped keys and fields share it)."""
DASHES = ("solid", "dot", "dash", "longdash", "dashdot")


def _colour(rank: int | None) -> str:
    return RANK_COLOURS[(rank or 0) % len(RANK_COLOURS)]


def _line(rank: int | None, index: int) -> dict[str, str]:
    """The rank's colour; its n-th line of a figure (a scoped key, an attempt, a field) dashed apart."""
    return {"color": _colour(rank), "dash": DASHES[index % len(DASHES)]}


def write_experiment_report(experiment: Experiment, output: Path) -> Path:
    import plotly.graph_objects as go

    timing = rank_slow_table(experiment.timed_by_rank())
    names = list(dict.fromkeys((row["kind"], row["name"]) for row in timing))[:MAX_PHASES]
    timing = [row for row in timing if (row["kind"], row["name"]) in names]
    stragglers = [*experiment.step_stragglers(), *experiment.phase_stragglers()]
    figures = [*_metric_figures(go, experiment), _rate_figure(go, experiment, stragglers),
               _phase_figure(go, timing), _resource_figure(go, experiment), _observed_figure(go, experiment)]
    sections = [_header(experiment), _ranks(experiment, stragglers), _advice(experiment)]
    sections += [figure_section(name, figure) for name, figure in (pair for pair in figures if pair)]
    sections.append(_tables(experiment, timing))
    head = experiment.headline.run
    title = f"{head.start.get('name') or experiment.id} ({experiment.world_size} ranks)"
    output.write_text(page(title, sections), encoding="utf-8")
    return output


def _header(experiment: Experiment) -> str:
    head = experiment.headline.run
    launch = head.launch
    how = ", ".join(str(part) for part in (launch.get("launcher"), launch.get("job_id") and
                                           f"job {launch['job_id']}") if part)
    tags = ", ".join(head.start.get("tags", [])) or "-"
    return (f"<h1>{html.escape(str(head.start.get('name') or '?'))}</h1><p class='meta'>experiment "
            f"{html.escape(experiment.id)} · status <b>{html.escape(experiment.status)}</b> · "
            f"{html.escape(experiment.state_text())} · {experiment.duration_s:.1f} s"
            + (f" · {html.escape(how)}" if how else "")
            + f" · purpose {html.escape(head.start.get('purpose') or '-')} · tags {html.escape(tags)}</p>")


def _ranks(experiment: Experiment, stragglers: list[Straggler]) -> str:
    """What ``show`` prints per rank, and every straggler against the median rank."""
    rows = [[row.rank, row.node_rank, ", ".join(map(str, row.attempts)), row.status, row.steps, row.last_step,
             rate(row.step_rate), row.last_loss, row.workers or None, when(member.run.last_time_ns)]
            for row, member in zip(experiment.rank_rows(), experiment.current, strict=True)]
    ranks = table("Ranks", ["rank", "node", "attempts", "status", "steps", "last step", "steps/s",
                            "last loss", "workers", "last seen (UTC)"], rows, "ranks-table")
    found = [[s.by, s.kind, s.rank, _value(s, s.value), s.median_rank, _value(s, s.median), _slower(s),
              _clear(s)] for s in stragglers]
    behind = table("Stragglers (the slowest rank against the median rank)",
                   ["by", "kind", "slowest rank", "its value", "median rank", "its value", "slower by",
                    "worth a look"], found or [["-"] * 6 + ["no straggler", "-"]], "stragglers-table")
    attempts = "".join(f"<p>{html.escape(attempts[0].label)} attempts: " + html.escape(", ".join(
        f"{m.attempt} {m.status} ({m.run.path.name})" for m in attempts)) + "</p>"
        for attempts in experiment.ranks.values() if len(attempts) > 1)
    return f"<section id='ranks'>{ranks}{attempts}{behind}</section>"


def _clear(item: Straggler) -> str:
    """Whether the straggler is worth a look (``Straggler.costly``), and why not."""
    if item.costly or item.by == "last step":
        return "yes"
    if not item.clear:
        return f"no: under {STRAGGLER_TOLERANCE:.0%} slower"
    return f"no: {item.share or 0.0:.0%} of its run lost"


def _value(item: Straggler, value: float) -> str:
    if item.by == "step rate":
        return f"{rate(value)} steps/s"
    return f"step {value:.0f}" if item.by == "last step" else f"p50 {value:.4g} s"


def _slower(item: Straggler) -> str:
    if item.by == "last step":
        return f"{item.median - item.value:.0f} steps behind"
    lost = f", {item.lost_s:.3g} s lost" if item.lost_s is not None else ""
    share = f" ({item.share:.0%} of its run)" if item.share is not None else ""
    if item.kind == "steps":
        return f"{item.slower_by:.0%} fewer steps/s{lost}{share}"
    return f"{item.ratio:.2f}x (+{item.value - item.median:.4g} s){lost}{share}"


def _advice(experiment: Experiment) -> str:
    """The experiment's advice (ranks that ended or went silent, stragglers), then each rank's own, one row
    per rule with every rank it holds for (the first rank's words; the crash of a rank is said above)."""
    rows: list[list[Any]] = [[item["severity"], item["evidence"].get("rank"), item["message"]]
                             for item in experiment.recommendations()]
    own: dict[str, tuple[dict[str, Any], list[int | None]]] = {}
    for member in experiment.current:
        for item in member.run.recommendations():
            if item["rule"] != "crashed":
                own.setdefault(item["rule"], (item, []))[1].append(member.rank)
    for item, ranks in own.values():
        listed = ", ".join(map(str, ranks))
        rows.append([item["severity"], listed, item["message"] if len(ranks) == 1 else
                     f"{item['message']} (rank {ranks[0]}'s figures; also on the other ranks listed)"])
    advice = table("Recommendations", ["severity", "rank", "advice"], rows or [["-", "-", "nothing to flag"]],
                   "recommendations-table")
    return f"<section id='advice'>{advice}</section>"


def _metric_figures(go: Any, experiment: Experiment) -> list[tuple[str, Any]]:
    """A figure per metric leaf (``loss`` first): a line per rank (and attempt), its scoped keys apart."""
    by_leaf: dict[str, set[str]] = {}
    for member in experiment.members:
        for key in member.run.history:
            by_leaf.setdefault(key.rsplit("/", 1)[-1], set()).add(key)
    figures = []
    for leaf in sorted(by_leaf, key=lambda k: (k != "loss", k))[:MAX_METRIC_PLOTS]:
        keys = sorted(by_leaf[leaf])
        curves = go.Figure()
        for member in experiment.members:
            for index, key in enumerate(k for k in keys if k in member.run.history):
                finite = thin([(float(s), v) for s, v in member.run.history[key]
                                if s is not None and math.isfinite(v)])
                scope = key[: -len(leaf) - 1] or "(no scope)"
                curves.add_trace(go.Scatter(  # a short series (one validation point) needs its markers
                    x=[s for s, _ in finite], y=[v for _, v in finite],
                    mode="lines+markers" if len(finite) <= MARKERS_UP_TO else "lines",
                    name=member.label if len(keys) == 1 else f"{member.label} {scope}",
                    legendgroup=f"rank {member.rank}",
                    line=_line(member.rank, index + member.attempt)))
        curves.update_layout(title=f"{leaf} by step (one line per rank)", xaxis_title="step", height=380)
        figures.append((f"metric-{slug(leaf)}", curves))
    return figures


def _rate_figure(go: Any, experiment: Experiment, stragglers: list[Straggler]) -> tuple[str, Any]:
    slow = next((s.rank for s in stragglers if s.by == "step rate" and s.costly), None)
    rows = [row for row in experiment.rank_rows() if row.rank is not None]
    colours = [STRAGGLER_COLOUR if row.rank == slow else RANK_COLOUR for row in rows]
    bars = go.Figure(go.Bar(x=[f"rank {row.rank}" for row in rows], y=[row.step_rate or 0.0 for row in rows],
                            marker_color=colours, text=[row.status for row in rows], name="steps/s"))
    bars.update_layout(title="Steps per second by rank" + (f" (rank {slow}, in red, is the straggler)"
                                                         if slow is not None else ""), height=360)
    return "step-rate", bars


def _phase_figure(go: Any, timing: list[dict[str, Any]]) -> tuple[str, Any] | None:
    """Bars of each rank's p50 per scope/phase, the whisker up to its p95."""
    if not timing:
        return None
    bars = go.Figure()
    for rank in sorted({row["rank"] for row in timing}):
        mine = [row for row in timing if row["rank"] == rank]
        whiskers = {"type": "data", "symmetric": False, "array": [r["p95_s"] - r["p50_s"] for r in mine],
                    "arrayminus": [0.0] * len(mine)}
        bars.add_trace(go.Bar(x=[row["name"] for row in mine], y=[row["p50_s"] for row in mine],
                              name=f"rank {rank}", marker_color=_colour(rank), error_y=whiskers))
    bars.update_layout(title="Scopes and phases: p50 per rank (whisker: p95), seconds", barmode="group",
                       height=400)
    return "phases", bars


def _resource_figure(go: Any, experiment: Experiment) -> tuple[str, Any] | None:
    """``log_resource`` samples per rank, in seconds since the experiment started; none: no figure."""
    origin = experiment.start_ns or 0
    lines = go.Figure()
    for member in experiment.current:
        series = resource_series(member.run, origin)
        pairs = [(component, f, v) for component, fields in series.items() for f, v in fields.items()]
        for index, (component, field, values) in enumerate(pairs):
            lines.add_trace(go.Scatter(x=[t for t, _ in values], y=[v for _, v in values],
                                       mode="lines+markers", name=f"{member.label} {component} {field}",
                                       legendgroup=f"rank {member.rank}",
                                       line=_line(member.rank, index)))
    if not lines.data:
        return None
    lines.update_layout(title="Resources per rank (log_resource / log_component_resources), seconds since "
                        "the experiment started", height=400)
    return "resources", lines


def _observed_figure(go: Any, experiment: Experiment) -> tuple[str, Any] | None:
    """What each rank's observers sampled (``report_observed``), on the experiment's clock; ``None`` when
    no rank's were exported."""
    origin = experiment.start_ns or 0
    figure = go.Figure()
    for member in experiment.current:
        add_observed(go, figure, observed_series(member.run.path, origin), member.label,
                     _colour(member.rank), f"rank {member.rank}")
    if not figure.data:
        return None
    return "observed", observed_layout(figure, "Observed per rank (process tree, host, GPUs), seconds since "
                                       "the experiment started")


def _tables(experiment: Experiment, timing: list[dict[str, Any]]) -> str:
    current = experiment.current
    summaries = [(member, member.run.summary()) for member in current]
    components = [[m.rank, name, t["samples"], t["cpu_percent_mean"], t["cpu_percent_max"],
                   t["gpu_percent_mean"], t["memory_mb_peak"]]
                  for m, s in summaries for name, t in s["resources"].items()]
    observed = [[m.rank, o.get("samples"), o.get("cpu_hours", 0.0) * 3600,
                 o.get("memory_peak_bytes", 0) / 2**20, o.get("gpu_hours"),
                 (o.get("energy_joules") or {}).get("total")]
                for m, s in summaries if (o := s.get("observed") or {})]
    head = experiment.headline.run.summary()
    parts = [
        table("Scopes and phases per rank", ["kind", "name", "rank", "count", "total s", "p50 s", "p95 s",
                                             "max s"],
              [[r["kind"], r["name"], r["rank"], r["count"], r["total_s"], r["p50_s"], r["p95_s"], r["max_s"]]
               for r in timing], "phases-table", empty="No scope or phase was timed."),
        table("Resources per rank (log_resource / log_component_resources)",
              ["rank", "component", "samples", "CPU % mean", "CPU % max", "GPU % mean", "memory MB peak"],
              components or [["-", "nothing logged", "-", "-", "-", "-", "-"]], "resources-table"),
        table("Observed per rank (the exporter's observers)",
              ["rank", "samples", "CPU s", "peak RSS MiB", "GPU h", "energy J"],
              observed or [["-", "no rank's exporter observed", "-", "-", "-", "-"]], "observed-table"),
        table("Metrics per rank", ["key", "rank", "count", "last", "best", "min", "max", "non-finite"],
              [[k, m.rank, st["count"], st["last"], st["best"], st["min"], st["max"], st["nonfinite"]]
               for m, s in summaries for k, st in s["metrics"].items()], "metrics-table",
              empty="No metric was logged."),
        table(f"Configuration ({experiment.headline.label})", ["key", "value"],
              [[k, v] for k, v in head["config"].items()], empty="No configuration was logged."),
        table("Checkpoints", ["rank", "step", "path", "size bytes", "sha256"],
              [[m.rank, c.get("step"), c.get("path"), c.get("size_bytes"), c.get("sha256")]
               for m, s in summaries for c in s["checkpoints"]], empty="No checkpoint was logged."),
        table("Comments and conclusions", ["rank", "kind", "text"],
              [[m.rank, "comment", c] for m, s in summaries for c in s["comments"]]
              + [[m.rank, "conclusion", s["conclusion"]] for m, s in summaries if s["conclusion"]],
              empty="No comment or conclusion was logged."),
        _worker_note(current),
    ]
    return "<section id='tables'>" + "".join(parts) + "</section>"


def _worker_note(current: list[Member]) -> str:
    workers = [(m.rank, len(m.run.workers)) for m in current if m.run.workers]
    if not workers:
        return ""
    listed = ", ".join(f"rank {rank}: {n}" for rank, n in workers)
    return f"<p>Forked workers folded into their rank's figures ({html.escape(listed)}).</p>"
