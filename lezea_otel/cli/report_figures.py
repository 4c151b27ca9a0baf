"""The report's metric curves and its ``log_resource`` chart, for one run or several side by side.

A metric's history key is ``<scope>/<split>/<key>`` (``model.run_state.metric_name``); a figure is drawn per
last segment (``loss``), a line per scope and split. In one run a scope has a colour and a split a dash
(train solid, val dashed), so the training and validation curves of one scope read apart; comparing
runs, a run has a colour. A short series (a validation loss logged once per epoch scope) is drawn with
markers: one point with ``mode="lines"`` draws nothing at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lezea_otel.analysis.runs import Run
from lezea_otel.cli.report_html import PALETTE

MAX_METRIC_PLOTS = 12
MAX_POINTS = 5000
"""Points per curve at most: a long run is thinned evenly (its last point kept)."""
MARKERS_UP_TO = 30
"""A series of this many points or fewer is drawn with a marker at each point."""
DASHES = {"train": "solid", "val": "dash", "valid": "dash", "validation": "dash", "test": "dot",
          "eval": "dashdot"}
Series = dict[str, dict[str, list[tuple[float, float]]]]
"""Per component, per field: (seconds, value) points of its ``log_resource`` records."""


@dataclass(frozen=True)
class Curve:
    """One line of a metric figure."""

    key: str
    scope: str
    split: str | None
    points: list[tuple[float, float]]


def split_key(key: str) -> tuple[str, str | None, str]:
    """``builder:b0/val/loss`` -> (``builder:b0``, ``val``, ``loss``): scope segments carry a ``:``, a split
    segment (right before the key's last segment) does not."""
    prefix, _, leaf = key.rpartition("/")
    parts = prefix.split("/") if prefix else []
    split = parts.pop() if parts and ":" not in parts[-1] else None
    return "/".join(parts), split, leaf


def thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def curves_of(run: Run) -> dict[str, list[Curve]]:
    """The run's finite points with a step, per last key segment (``loss`` first, then by name)."""
    out: dict[str, list[Curve]] = {}
    for key, history in run.history.items():
        scope, split, leaf = split_key(key)
        points = thin([(float(s), v) for s, v in history if s is not None and math.isfinite(v)])
        out.setdefault(leaf, []).append(Curve(key, scope, split, points))
    return {leaf: out[leaf] for leaf in sorted(out, key=lambda k: (k != "loss", k))}


def scatter(go: Any, curve: Curve, name: str, colour: str, group: str) -> Any:
    """A line of a metric figure; markers where it is short (a lone point would draw nothing without)."""
    short = len(curve.points) <= MARKERS_UP_TO
    return go.Scatter(x=[s for s, _ in curve.points], y=[v for _, v in curve.points],
                      mode="lines+markers" if short else "lines", name=name, legendgroup=group,
                      line={"color": colour, "dash": DASHES.get(curve.split or "train", "longdash")},
                      marker={"size": 9 if len(curve.points) == 1 else 6, "color": colour})


def metric_figures(go: Any, run: Run) -> list[tuple[str, Any]]:
    """A figure per metric (its last key segment): a line per scope (a colour) and split (a dash)."""
    from lezea_otel.cli.report_html import slug

    figures = []
    for leaf, curves in list(curves_of(run).items())[:MAX_METRIC_PLOTS]:
        scopes = list(dict.fromkeys(c.scope for c in curves))
        figure = go.Figure()
        for curve in curves:
            label = curve.key[: -len(leaf) - 1] or "(no scope)"
            colour = PALETTE[scopes.index(curve.scope) % len(PALETTE)]
            figure.add_trace(scatter(go, curve, label, colour, curve.scope or "(no scope)"))
        figure.update_layout(title=f"{leaf} by step (a colour per scope, a dash per split: train solid, "
                             "val dashed)", xaxis_title="step", height=380)
        figures.append((f"metric-{slug(leaf)}", figure))
    return figures


def compared_metric_figures(go: Any, runs: list[tuple[str, Run]]) -> list[tuple[str, Any]]:
    """A figure per metric across runs: a colour per run (legend: its name and short id), a dash per
    split, the run's scopes named in the legend."""
    from lezea_otel.cli.report_html import slug

    per_run = [(label, curves_of(run)) for label, run in runs]
    leaves = sorted({leaf for _, curves in per_run for leaf in curves}, key=lambda k: (k != "loss", k))
    figures = []
    for leaf in leaves[:MAX_METRIC_PLOTS]:
        figure = go.Figure()
        for index, (label, curves) in enumerate(per_run):
            for curve in curves.get(leaf, []):
                where = curve.key[: -len(leaf) - 1]
                figure.add_trace(scatter(go, curve, f"{label} {where}".strip(),
                                         PALETTE[index % len(PALETTE)], label))
        figure.update_layout(title=f"{leaf} by step (a colour per run, a dash per split: train solid, "
                             "val dashed)", xaxis_title="step", height=400)
        figures.append((f"metric-{slug(leaf)}", figure))
    return figures


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


def logged_resource_figure(go: Any, run: Run) -> Any | None:
    """What the user logged with ``log_resource``/``log_component_resources``; ``None`` when nothing."""
    figure = go.Figure()
    for component, series in resource_series(run).items():
        for field, values in series.items():
            figure.add_trace(go.Scatter(x=[t for t, _ in values], y=[v for _, v in values],
                                        mode="lines+markers", name=f"{component} {field}"))
    if not figure.data:
        return None
    figure.update_layout(title="Resources logged by the run (log_resource / log_component_resources), "
                         "seconds since the start", xaxis_title="seconds", height=400)
    return figure
