"""Phases in the report: the phases of the last steps on a time axis (a row per step, a bar per phase
instance), the scopes on the same clock, and the table of scopes and phases with their GPU time beside
the host's where it was measured.

A phase's step is the step that was running (``analysis.attribution``), so the row of step 7 holds the
``data``, ``forward`` and ``backward`` of step 7, whether the loop logged the step before or after them.
"""

from __future__ import annotations

import html
from typing import Any

from lezea_otel.analysis.runs import Run, Timed
from lezea_otel.analysis.timing import percentile
from lezea_otel.cli.report_html import PALETTE, table

TIMELINE_STEPS = 12
"""Steps (the latest) whose phases the timeline draws."""
MAX_SCOPES = 2000
"""Scope instances in the scope timeline at most, the longest first."""
RANKED_BY = ("Ranked by total wall-clock time, measured on the host around each scope or phase. GPU s: "
             "the time of a phase's work on its CUDA stream (CUDA events), where it was measured.")


def _labels(rows: list[Timed]) -> list[str]:
    """``step 7``; with the scope path where two rows share a step (two builders' step 20), and the
    forked worker where that is not enough either."""
    labels = [f"step {t.step}" if t.step is not None else "no step" for t in rows]
    for extra in (lambda t: t.scope, lambda t: f"worker {t.worker}" if t.worker is not None else ""):
        if len(set(labels)) == len(labels):
            break
        labels = [f"{label} · {extra(t)}" if extra(t) else label
                  for label, t in zip(labels, rows, strict=True)]
    return labels


def last_steps(run: Run, count: int = TIMELINE_STEPS) -> list[tuple[str, list[Timed]]]:
    """The phase instances of the latest ``count`` steps, a (label, phases) row per step (and scope path
    and worker: two builders' step 20 are two rows), in the order they began."""
    groups: dict[tuple[int | None, str, int | None], list[Timed]] = {}
    for item in run.timed:
        if item.kind == "phase":
            groups.setdefault((item.worker, item.scope, item.step), []).append(item)
    chosen = sorted(groups.values(), key=lambda items: min(i.start_ns for i in items))[-count:]
    labels = _labels([items[0] for items in chosen])
    return [(label, sorted(items, key=lambda i: i.start_ns))
            for label, items in zip(labels, chosen, strict=True)]


def step_timeline(go: Any, run: Run) -> Any | None:
    """A Gantt of the phases of the last steps (seconds since the run started); ``None`` with no phase."""
    rows = last_steps(run)
    if not rows:
        return None
    origin = run.state.start_ns or min(i.start_ns for _, items in rows for i in items)
    names = list(dict.fromkeys(i.name for _, items in rows for i in items))
    figure = go.Figure()
    for index, name in enumerate(names):
        picked = [(label, i) for label, items in rows for i in items if i.name == name]
        figure.add_trace(go.Bar(
            y=[label for label, _ in picked], x=[i.duration_s for _, i in picked],
            base=[(i.start_ns - origin) / 1e9 for _, i in picked], orientation="h", name=name,
            marker_color=PALETTE[index % len(PALETTE)],
            hovertext=[_hover(i) for _, i in picked], hoverinfo="text"))
    labels = [label for label, _ in rows]
    figure.update_layout(title=f"Phases of the last {len(rows)} steps (seconds since the start; a row per "
                         "step, the step that was running)", barmode="overlay", xaxis_title="seconds",
                         yaxis={"categoryorder": "array", "categoryarray": labels, "autorange": "reversed"},
                         height=max(320, 32 * len(rows) + 160))
    return figure


def _hover(item: Timed) -> str:
    gpu = f", GPU {item.gpu_duration_s:.4g} s" if item.gpu_duration_s is not None else ""
    error = f", raised {item.error}" if item.error else ""
    return f"{item.name} (step {item.step}): {item.duration_s:.4g} s{gpu}{error}"


def scope_timeline(go: Any, run: Run) -> Any | None:
    """Each scope instance as a bar from its start to its end; ``None`` when the run opened none."""
    items = sorted((t for t in run.timed if t.kind == "scope"), key=lambda t: t.duration_s,
                   reverse=True)[:MAX_SCOPES]
    if not items:
        return None
    origin = run.state.start_ns or min(t.start_ns for t in items)
    figure = go.Figure(go.Bar(y=[t.name for t in items], x=[t.duration_s for t in items],
                              base=[(t.start_ns - origin) / 1e9 for t in items], orientation="h",
                              name="scopes", hovertext=[f"{t.name}: {t.duration_s:.4g} s" for t in items]))
    figure.update_layout(title="Scopes over the run (seconds since the start)", barmode="overlay",
                         xaxis_title="seconds", height=max(300, 40 * len({t.name for t in items}) + 150))
    return figure


def phase_rows(timed: list[Timed], measured: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per scope or phase name, slowest total first: count, wall-clock total, p50, p95, max; GPU total
    and p50 where any phase measured one; CPU seconds and peak RSS where the observers measured them
    (``measured``: ``summary()["phases"]`` and ``["scopes"]`` merged, by name)."""
    by_name: dict[tuple[str, str], list[Timed]] = {}
    for item in timed:
        by_name.setdefault((item.kind, item.name), []).append(item)
    gpu = any(item.gpu_duration_s is not None for item in timed)
    columns = ["kind", "name", "count", "total s", "p50 s", "p95 s", "max s"]
    columns += ["GPU total s", "GPU p50 s"] if gpu else []
    columns += ["CPU s (observed)", "peak RSS MiB"]
    rows = []
    for (kind, name), items in by_name.items():
        wall = [i.duration_s for i in items]
        row: list[Any] = [kind, name, len(items), sum(wall), percentile(wall, 0.5), percentile(wall, 0.95),
                          max(wall)]
        if gpu:
            times = [i.gpu_duration_s for i in items if i.gpu_duration_s is not None]
            row += [sum(times), percentile(times, 0.5)] if times else [None, None]
        entry = measured.get(name) or {}
        peak = entry.get("memory.peak")
        row += [entry.get("cpu.seconds"), peak / 2**20 if isinstance(peak, (int, float)) else None]
        rows.append(row)
    rows.sort(key=lambda r: r[3], reverse=True)
    return columns, rows


def phase_table(run: Run, summary: dict[str, Any], limit: int = 20) -> str:
    measured = {**summary.get("scopes", {}), **summary.get("phases", {})}
    columns, rows = phase_rows(run.timed, measured)
    return table("Slowest scopes and phases", columns, rows[:limit], "phases-table",
                 empty="No scope or phase was timed.", note=RANKED_BY)


def gpu_note(run: Run) -> str:
    """One line when no phase measured GPU time (the table then has no GPU column), saying why."""
    if any(t.gpu_duration_s is not None for t in run.timed) or not run.timed:
        return ""
    return ("<p class='note'>" + html.escape("No phase measured GPU time: CUDA events time each phase once "
                                             "torch has initialised CUDA (LEZEA_GPU_TIMING).") + "</p>")
