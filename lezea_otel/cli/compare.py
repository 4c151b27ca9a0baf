"""``lezea-otel compare``: runs side by side (``analysis.compare.compare``), a column per run."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lezea_otel.cli.common import console, num
from lezea_otel.cli.merged import rate


def _table(title: str, runs: list[dict[str, Any]], first: str, *more: str) -> Table:
    table = Table(title=title)
    for column in (first, *more, *(f"{run['id'][:8]} {run['name'] or '?'}" for run in runs)):
        table.add_column(column, overflow="fold")
    return table


def _value(value: Any) -> str:
    return "-" if value is None else num(value) if isinstance(value, (int, float)) else str(value)


def print_compare(data: dict[str, Any]) -> None:
    """The runs (status, world size, tags, steps, steps/s, headline), the config keys that differ, each
    metric's last and best, the phases' p50 and total, resources and cost: each a table with a column per
    run, in the order the runs were named."""
    runs = data["runs"]
    overview = _table("Runs", runs, "")
    for label, cells in (
        ("status", [run["status"] + (f" ({run['world_size']} ranks, {run['member']}'s figures)"
                                     if run["distributed"] else "") for run in runs]),
        ("tags", [", ".join(run["tags"]) or "-" for run in runs]),
        ("start (UTC)", [(run["start"] or "-")[:19].replace("T", " ") for run in runs]),
        ("duration", [f"{run['duration_s']:.1f} s" for run in runs]),
        ("steps", [str(run["steps"]) for run in runs]),
        ("steps/s", [rate(run["steps_per_s"]) for run in runs]),
        ("headline", [f"{run['headline']['key']} {num(run['headline']['last'])}"
                      + (f" (best {num(run['headline']['best'])})" if run["headline"]["goal"] else "")
                      if run["headline"] else "-" for run in runs]),
    ):
        overview.add_row(label, *cells)
    console.print(overview)

    config = data["config"]
    if config["differences"]:
        table = _table(f"Config differences ({config['same']} keys the same)", runs, "key")
        for key, values in config["differences"].items():
            table.add_row(key, *map(_value, values))
        console.print(table)
    else:
        console.print(f"Config: no differences ({config['same']} keys, the same in every run).")

    if data["metrics"]:
        table = _table("Metrics: last (best where the metric has a goal); * a run's headline", runs, "key",
                       "goal")
        for metric in data["metrics"]:
            table.add_row(metric["key"] + (" *" if metric["headline"] else ""), metric["goal"] or "-",
                          *(_metric_cell(cell) for cell in metric["runs"]))
        console.print(table)
    else:
        console.print("Metrics: none logged in any of these runs.")

    if data["phases"]:
        table = _table("Phases: p50 s / total s (GPU p50 / total where CUDA events measured it)", runs,
                       "phase")
        for phase in data["phases"]:
            table.add_row(phase["name"], *(_phase_cell(cell) for cell in phase["runs"]))
        console.print(table)
    else:
        console.print("Phases: none timed in any of these runs.")

    table = _table("Resources and cost (observers' totals; - where not measured)", runs, "")
    resources = data["resources"]
    for label, key in (("CPU hours", "cpu_hours"), ("peak RSS MiB", "peak_rss_mib"),
                       ("GPU hours", "gpu_hours"), ("cost EUR", "cost_eur")):
        table.add_row(label, *(_value(entry[key]) for entry in resources))
    console.print(table)


def _metric_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    return num(cell["last"]) + (f" (best {num(cell['best'])})" if cell["best"] is not None else "")


def _phase_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    text = f"{cell['p50_s']:.4f} / {cell['total_s']:.3f} ({cell['count']}x)"
    if cell["gpu_total_s"] is not None:
        text += f"; GPU {cell['gpu_p50_s']:.4f} / {cell['gpu_total_s']:.3f}"
    return text
