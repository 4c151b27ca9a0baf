"""Runs side by side, and runs found: what ``lezea-otel compare``, ``runs`` (its filters) and ``slow`` (its
GPU columns) print, as plain data that the tables and ``--json`` are both built from, so they agree.

An experiment is summed up by its headline member (rank 0's latest attempt, ``Experiment.headline``): its
steps, metrics, phases and observed resources; a distributed one says its world size next to them. The
duration is the experiment's (first start to last record over every member).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.analysis.experiment import Experiment
from lezea_otel.analysis.runs import Run, Timed
from lezea_otel.analysis.timing import percentile, slow_table

STATUSES = ("finished", "failed", "crashed", "running", "terminated", names.STATUS_ABANDONED, "degraded",
            names.STATUS_NOT_STARTED, "unknown")
"""What ``runs --status`` takes: an experiment's status (``Experiment.status``)."""
_MISSING = object()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``hyperparameters.lr``): one row per knob in a comparison."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_differences(configs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Any]], int]:
    """The flattened keys whose values are not the same in every run (a key a run lacks: ``None`` for it),
    in the order first seen, and how many keys all runs share with one value."""
    flat = [flatten(config) for config in configs]
    keys = list(dict.fromkeys(key for config in flat for key in config))
    differing = {}
    for key in keys:
        values = [config.get(key, _MISSING) for config in flat]
        if any(value != values[0] for value in values):
            differing[key] = [None if value is _MISSING else value for value in values]
    return differing, len(keys) - len(differing)


def tags_of(run: Run) -> list[str]:
    """The run's tags (its start record's), [] for an older run."""
    tags = run.start.get("tags")
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


def iso(time_ns: int | None) -> str | None:
    """A time as ISO 8601 in UTC (what ``--json`` carries next to the nanoseconds)."""
    if not time_ns:
        return None
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).isoformat()


def select(experiments: Iterable[Experiment], name: str | None = None, tags: Sequence[str] = (),
           statuses: Sequence[str] = (), since_ns: int | None = None) -> list[Experiment]:
    """The experiments ``runs`` lists: the name contains ``name`` (case-insensitive), every one of ``tags``
    is among theirs, the status is one of ``statuses``, started at or after ``since_ns``; an empty filter
    lets every run through."""
    found = []
    for experiment in experiments:
        start = experiment.headline.run.start
        if name and name.casefold() not in str(start.get("name") or "").casefold():
            continue
        if tags and not set(tags) <= set(tags_of(experiment.headline.run)):
            continue
        if statuses and experiment.status not in statuses:
            continue
        if since_ns is not None and (experiment.start_ns or 0) < since_ns:
            continue
        found.append(experiment)
    return found


def run_row(experiment: Experiment) -> dict[str, Any]:
    """One row of ``runs``: the experiment's status over its ranks, the headline member's figures."""
    run = experiment.headline.run
    summary = run.summary()
    targets = run.start.get("targets", [])
    head = summary["headline"]
    state = experiment.state_text()
    return {
        "id": experiment.id, "name": run.start.get("name"), "purpose": run.start.get("purpose") or None,
        "tags": tags_of(run), "status": experiment.status, "ranks": None if state == "-" else state,
        "world_size": experiment.world_size if experiment.distributed else 1,
        "start_ns": experiment.start_ns, "start": iso(experiment.start_ns),
        "last_seen_ns": experiment.last_time_ns, "last_seen": iso(experiment.last_time_ns),
        "duration_s": experiment.duration_s, "steps": summary["steps"]["count"],
        "headline": None if head is None else {k: head[k] for k in ("key", "last", "best", "goal")},
        "delivery": "OTLP" if any(str(t).startswith("OTLP") for t in targets) else "local",
        "path": str(experiment.path),
    }


def gpu_stats(durations: list[float | None]) -> dict[str, Any]:
    """GPU p50/p95/total of the instances measured with CUDA events; ``None`` figures when none was."""
    measured = [d for d in durations if d is not None]
    if not measured:
        return {"gpu_count": 0, "gpu_total_s": None, "gpu_p50_s": None, "gpu_p95_s": None}
    return {"gpu_count": len(measured), "gpu_total_s": sum(measured), "gpu_p50_s": percentile(measured, 0.5),
            "gpu_p95_s": percentile(measured, 0.95)}


def timed_rows(timed: Iterable[Timed]) -> list[dict[str, Any]]:
    """``timing.slow_table``'s rows (per kind and name: count, total, p50, p95, max of the wall time,
    slowest first), each with its GPU figures (``gpu_stats``)."""
    items = list(timed)
    gpu: dict[tuple[str, str], list[float | None]] = {}
    for item in items:
        gpu.setdefault((item.kind, item.name), []).append(item.gpu_duration_s)
    return [{**row, **gpu_stats(gpu[(row["kind"], row["name"])])} for row in slow_table(items)]


def ranked_by(rows: Sequence[Mapping[str, Any]], top: int) -> str | None:
    """What ``slow`` ranks phases by: ``"gpu"`` (GPU total) when every instance of the ``top`` phase names
    slowest by wall time was measured on the GPU, ``"wall"`` otherwise; ``None`` when no phase has GPU time
    (the wall time then, nothing to say)."""
    phases = [row for row in rows if row["kind"] == "phase"]
    if not any(row["gpu_count"] for row in phases):
        return None
    return "gpu" if all(row["gpu_count"] == row["count"] for row in phases[:top]) else "wall"


def ranked(rows: Sequence[Mapping[str, Any]], by: str | None) -> list[dict[str, Any]]:
    """Rows ordered by ``by``: GPU total (rows without GPU time last, by wall time), else as given."""
    if by != "gpu":
        return [dict(row) for row in rows]
    return sorted((dict(row) for row in rows),
                  key=lambda row: (row["gpu_total_s"] is None, -(row["gpu_total_s"] or 0.0), -row["total_s"]))


def phase_figures(timed: Iterable[Timed]) -> dict[str, dict[str, Any]]:
    """Per phase name of one run: count, p50 and total, wall and GPU (slowest by wall total first)."""
    return {row["name"]: {k: row[k] for k in ("count", "p50_s", "total_s", "gpu_p50_s", "gpu_total_s")}
            for row in timed_rows(timed) if row["kind"] == "phase"}


def run_figures(experiment: Experiment) -> dict[str, Any]:
    """What ``compare`` puts side by side for one experiment (its headline member's figures)."""
    member = experiment.headline
    run = member.run
    summary = run.summary()
    observed = summary.get("observed") or {}
    peak = observed.get("memory_peak_bytes")
    return {
        "id": experiment.id, "name": run.start.get("name"), "path": str(experiment.path),
        "status": experiment.status, "distributed": experiment.distributed,
        "world_size": experiment.world_size if experiment.distributed else 1, "member": member.label,
        "tags": tags_of(run), "start": iso(experiment.start_ns), "duration_s": experiment.duration_s,
        "steps": summary["steps"]["count"], "last_step": summary["steps"]["last"],
        "steps_per_s": run.step_rate, "headline": summary["headline"], "config": summary["config"],
        "metrics": summary["metrics"], "phases": phase_figures(run.timed),
        "resources": {"cpu_hours": observed.get("cpu_hours"),
                      "peak_rss_mib": peak / 2**20 if isinstance(peak, (int, float)) else None,
                      "gpu_hours": observed.get("gpu_hours") if observed.get("gpus") else None,
                      "cost_eur": summary["cost"].get("total_eur")},
    }


def compare(experiments: Sequence[Experiment]) -> dict[str, Any]:
    """Experiments side by side: the runs, the config keys that differ, each metric's last and best (the
    best only where the metric has a goal) with the headlines first, the phases' p50 and total, the
    resources and cost. Every list of per-run values is in the order of ``experiments``."""
    figures = [run_figures(experiment) for experiment in experiments]
    differing, same = config_differences([f["config"] for f in figures])
    heads = [f["headline"]["key"] for f in figures if f["headline"]]
    keys = list(dict.fromkeys([*heads, *(key for f in figures for key in f["metrics"])]))
    metrics = []
    for key in keys:
        cells = [f["metrics"].get(key) for f in figures]
        goal = next((cell["goal"] for cell in cells if cell and cell["goal"]), None)
        metrics.append({"key": key, "goal": goal, "headline": key in heads, "runs": [
            None if cell is None else {"last": cell["last"], "best": cell["best"] if cell["goal"] else None}
            for cell in cells]})
    totals: dict[str, float] = {}
    for f in figures:
        for name, phase in f["phases"].items():
            totals[name] = totals.get(name, 0.0) + phase["total_s"]
    phases = [{"name": name, "runs": [f["phases"].get(name) for f in figures]}
              for name in sorted(totals, key=lambda n: -totals[n])]
    runs = [{k: v for k, v in f.items() if k not in ("config", "metrics", "phases", "resources")}
            for f in figures]
    return {"runs": runs, "config": {"differences": differing, "same": same}, "metrics": metrics,
            "phases": phases, "resources": [f["resources"] for f in figures]}
