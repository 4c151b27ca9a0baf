"""One self-contained HTML report of a run: plotly figures with plotly.js embedded once, no CDN. A
distributed experiment's ranks are merged into one report (``report_ranks``)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from lezea_otel.model.experiment import Experiment
from lezea_otel.model.record import Kind
from lezea_otel.model.runs import Run
from lezea_otel.model.timing import slow_table

MAX_TIMELINE = 2000
MAX_METRIC_PLOTS = 12
Series = dict[str, dict[str, list[tuple[float, float]]]]
"""Per component, per field: (seconds, value) points of its ``log_resource`` records."""


def write_report(target: Run | Experiment, output: Path) -> Path:
    """The report of a run; of an experiment: its ranks merged when it is a distributed one opened whole,
    otherwise its headline run's (a lone run, one rank's folder, a lone run's latest attempt)."""
    if isinstance(target, Experiment):
        if target.distributed and not target.partial:
            from lezea_otel.cli.report_ranks import write_experiment_report

            return write_experiment_report(target, output)
        target = target.headline.run
    run = target
    import plotly.graph_objects as go

    summary = run.summary()
    sections: list[str] = [_header(run, summary)]
    figures: list[tuple[str, Any]] = []

    by_leaf: dict[str, list[str]] = {}
    for key in run.history:
        by_leaf.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    for leaf in sorted(by_leaf, key=lambda k: (k != "loss", k))[:MAX_METRIC_PLOTS]:
        curves = go.Figure()
        for key in by_leaf[leaf]:
            finite = [(s, v) for s, v in run.history[key] if s is not None and math.isfinite(v)]
            label = key[: -len(leaf) - 1] or "(no scope)"
            curves.add_trace(go.Scatter(x=[s for s, _ in finite], y=[v for _, v in finite], mode="lines",
                                        name=label))
        curves.update_layout(title=f"{leaf} by step (one line per scope and split)", xaxis_title="step",
                             height=380)
        figures.append((f"metric-{slug(leaf)}", curves))

    resources = go.Figure()
    for component, series in resource_series(run).items():
        for field, values in series.items():
            resources.add_trace(go.Scatter(x=[t for t, _ in values], y=[v for _, v in values],
                                           mode="lines+markers", name=f"{component} {field}"))
    resources.update_layout(title="Resources (log_resource / log_component_resources)", height=400)
    figures.append(("resources", resources))

    timeline = go.Figure()
    items = sorted(run.timed, key=lambda t: t.duration_s, reverse=True)[:MAX_TIMELINE]
    starts = _start_offsets(run)
    for kind in ("scope", "phase"):
        chosen = [(t, starts.get((t.span_id, t.name))) for t in items if t.kind == kind]
        chosen = [(t, s) for t, s in chosen if s is not None]
        if chosen:
            timeline.add_trace(go.Bar(y=[t.name for t, _ in chosen], x=[t.duration_s for t, _ in chosen],
                                      base=[s for _, s in chosen], orientation="h", name=f"{kind}s",
                                      hovertext=[f"step {t.step} span {t.span_id}" for t, _ in chosen]))
    timeline.update_layout(title="Timeline of scopes and phases (seconds since start)", barmode="overlay",
                           height=max(300, 40 * len({t.name for t in items}) + 150))
    figures.append(("timeline", timeline))

    for name, figure in figures:
        sections.append(f'<section id="{name}">' + figure.to_html(full_html=False, include_plotlyjs=False,
                                                                   div_id=f"plot-{name}") + "</section>")
    sections.append(_tables(run, summary))
    output.write_text(page(str(run.start.get("name") or run.id), sections), encoding="utf-8")
    return output


def page(title: str, sections: list[str]) -> str:
    """The whole document: plotly.js inline once, then the sections."""
    from plotly.offline import get_plotlyjs

    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>lezea_otel report: {html.escape(title)}</title>"
            f"<style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            + "".join(sections) + "</body></html>")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def _start_offsets(run: Run) -> dict[tuple[str | None, str], float]:
    origin = run.state.start_ns or 0
    out = {}
    for event in run.events:
        if event["kind"] in (Kind.SCOPE_END, Kind.PHASE):
            name = event["scope"] if event["kind"] == Kind.SCOPE_END else event["data"]["name"]
            end = (int(event.get("time_unix_nano") or 0) - origin) / 1e9
            out[(event.get("span_id"), name)] = end - float(event["data"].get("duration_s") or 0.0)
    return out


def resource_series(run: Run, origin_ns: int | None = None) -> Series:
    """Per component and field, (seconds since ``origin_ns``, value): the run's start unless told."""
    origin = origin_ns if origin_ns is not None else run.state.start_ns or 0
    out: Series = {}
    for event in run.events:
        if event["kind"] != "resource":
            continue
        data = event["data"]
        seconds = (int(event.get("time_unix_nano") or 0) - origin) / 1e9
        for field in ("cpu_percent", "gpu_percent", "memory_mb"):
            if isinstance(data.get(field), (int, float)):
                out.setdefault(data["component_id"], {}).setdefault(field, []).append((seconds, data[field]))
    return out


def _header(run: Run, summary: dict[str, Any]) -> str:
    tags = ", ".join(run.start.get("tags", [])) or "-"
    name = str(run.start.get("name") or "?")
    return (f"<h1>{html.escape(name)}</h1><p class='meta'>id {html.escape(run.id)} · "
            f"status <b>{html.escape(summary['status'])}</b> · {summary['duration_s']:.1f} s · "
            f"{summary['steps']['count']} steps · purpose {html.escape(run.start.get('purpose') or '-')} · "
            f"tags {html.escape(tags)}</p>")


def table(title: str, columns: list[str], rows: list[list[Any]], table_id: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return (f"<h2>{html.escape(title)}</h2><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            "</table>")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def _tables(run: Run, summary: dict[str, Any]) -> str:
    parts = [
        table("Recommendations", ["severity", "advice"],
               [[r["severity"], r["message"]] for r in run.recommendations()] or [["-", "nothing to flag"]]),
        table("Metrics", ["key", "count", "last", "best", "min", "max", "non-finite"],
               [[k, s["count"], s["last"], s["best"], s["min"], s["max"], s["nonfinite"]]
                for k, s in summary["metrics"].items()]),
        table("Slowest scopes and phases", ["kind", "name", "count", "total s", "p50 s", "p95 s", "max s"],
               [[r["kind"], r["name"], r["count"], r["total_s"], r["p50_s"], r["p95_s"], r["max_s"]]
                for r in slow_table(run.timed)[:20]]),
        table("Configuration", ["key", "value"], [[k, v] for k, v in summary["config"].items()]),
        table("Checkpoints", ["step", "path", "size bytes", "sha256"],
               [[c.get("step"), c.get("path"), c.get("size_bytes"), c.get("sha256")]
                for c in summary["checkpoints"]]),
        table("Rewards", ["agent", "last", "best", "count"],
               [[k, s["last"], s["best"], s["count"]] for k, s in summary["rewards"].items()]),
        table("Cost", ["kind", "value"], [[k, v] for k, v in summary["cost"].items()]),
        table("Comments and conclusion", ["kind", "text"],
               [["comment", c] for c in summary["comments"]]
               + ([["conclusion", summary["conclusion"]]] if summary["conclusion"] else [])),
    ]
    return "<section id='tables'>" + "".join(parts) + "</section>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}h1{margin-bottom:.2rem}.meta{color:#555}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;font-size:.9rem}th{background:#f3f3f3}section{margin-bottom:2rem}
"""
