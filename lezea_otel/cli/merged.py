"""The merged view of an experiment whose processes wrote one audit each: ``runs`` (one row per
experiment, filtered by name, tag, status and start), ``show`` (a row per rank, the attempts, the
straggler) and ``slow`` (phase p50/p95 per rank, the straggler per phase, GPU time where measured). A lone
run with one audit prints exactly as it always did. Each command builds one dict (``runs_data``,
``experiment_data``, ``slow_data``) that its tables are printed from and ``--json`` prints as is."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from lezea_otel.analysis.compare import ranked, ranked_by, run_row, select, timed_rows
from lezea_otel.analysis.experiment import RATE_TOLERANCE, Experiment, load_experiment
from lezea_otel.analysis.runs import Timed, run_folders
from lezea_otel.analysis.timing import Straggler, phase_stragglers, rank_slow_table
from lezea_otel.cli.common import console, num, when
from lezea_otel.cli.show import print_run, run_data

SINCE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_since(text: str, now_ns: int | None = None) -> int:
    """``--since``: a duration back from now (``30m``, ``2h``, ``3d``, ``1h30m``; s, m, h, d, w) or an
    ISO date or time (``2026-12-01``, ``2026-12-01T14:00``; UTC unless it names its zone), in ns."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    compact = text.strip().lower().replace(" ", "")
    if compact and SINCE.sub("", compact) == "":
        seconds = sum(float(n) * UNITS[unit] for n, unit in SINCE.findall(compact))
        return now_ns - int(seconds * 1e9)
    try:
        moment = datetime.fromisoformat(text.strip().removesuffix("Z").removesuffix("z"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a duration (30m, 2h, 3d) nor an ISO date/time "
                                 "(2026-12-01 or 2026-12-01T14:00)", param_hint="--since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    since = moment - EPOCH  # exact to the microsecond (a float timestamp in ns is not)
    return (since.days * 86400 + since.seconds) * 10**9 + since.microseconds * 1000


def runs_data(folder: Path, name: str | None = None, tags: Sequence[str] = (), statuses: Sequence[str] = (),
              since_ns: int | None = None) -> dict[str, Any]:
    """What ``runs`` lists (``--json`` as is): the rows of the experiments the filters let through, oldest
    first, and how many runs the folder holds in all."""
    experiments = [load_experiment(path) for path in run_folders(folder)]
    chosen = select(experiments, name, tags, statuses, since_ns)
    filters = {"name": name, "tags": list(tags), "statuses": list(statuses), "since_ns": since_ns}
    return {"runs_dir": str(folder), "total": len(experiments), "filters": filters,
            "runs": [run_row(experiment) for experiment in chosen]}


def print_runs(data: dict[str, Any]) -> None:
    """One row per experiment (``runs_data``): its status over all ranks, the ranks' states, its tags, the
    headline rank's figures (the last seen time without its date when that is the start's)."""
    folder, rows = data["runs_dir"], data["runs"]
    if not data["total"]:
        console.print(f"No runs in {folder}.")
        return
    if not rows:
        console.print(f"No runs in {folder} match {_filters_text(data['filters'])} "
                      f"({data['total']} run{'s' * (data['total'] != 1)} in all).")
        return
    purposes = any(row["purpose"] for row in rows)  # a column only when used
    tags = any(row["tags"] for row in rows)
    shown = "" if len(rows) == data["total"] else f" ({len(rows)} of {data['total']})"
    table = Table(title=f"Runs in {folder}{shown}")
    for column in ("id", "name", *(("purpose",) if purposes else ()), *(("tags",) if tags else ()),
                   "status", "ranks", "start (UTC)", "last seen", "duration", "headline", "steps", "last",
                   "best", "delivery"):
        table.add_column(column, overflow="fold", no_wrap=column in ("status", "ranks"))
    for row in rows:
        start, last = when(row["start_ns"]), when(row["last_seen_ns"])
        head = row["headline"] or {}
        table.add_row(row["id"][:8], row["name"] or "?", *((row["purpose"] or "",) if purposes else ()),
                      *((", ".join(row["tags"]),) if tags else ()), row["status"], row["ranks"] or "-", start,
                      last[11:] if last[:10] == start[:10] else last, f"{row['duration_s']:.1f} s",
                      head.get("key") or "-", str(row["steps"]), num(head.get("last")),
                      num(head.get("best")), row["delivery"])
    console.print(table)


def _filters_text(filters: dict[str, Any]) -> str:
    parts = [f"name containing {filters['name']!r}"] if filters["name"] else []
    parts += [f"tag {tag!r}" for tag in filters["tags"]]
    if filters["statuses"]:
        parts.append("status " + " or ".join(filters["statuses"]))
    if filters["since_ns"] is not None:
        parts.append(f"started since {when(filters['since_ns'])} UTC")
    return ", ".join(parts) or "the filters"


def experiment_data(experiment: Experiment) -> dict[str, Any]:
    """What ``show`` prints and ``show --json`` carries: the experiment as a whole (its ranks or attempts,
    the stragglers by step, its advice) when it has several members, and its headline member in full
    (``run``: ``show.run_data``)."""
    head = experiment.headline
    launch = head.run.launch
    data: dict[str, Any] = {"experiment": {
        "id": experiment.id, "name": head.run.start.get("name"), "path": str(experiment.path),
        "status": experiment.status, "ranks": experiment.state_text(), "distributed": experiment.distributed,
        "world_size": experiment.world_size if experiment.distributed else 1, "partial": experiment.partial,
        "duration_s": experiment.duration_s, "launcher": launch.get("launcher"),
        "job_id": launch.get("job_id"),
        "members": len(experiment.members), "headline_member": head.label}}
    if not experiment.partial and len(experiment.members) > 1:
        if experiment.distributed:
            data["ranks"] = [{**asdict(row), "last_seen_ns": member.run.last_time_ns}
                             for row, member in zip(experiment.rank_rows(), experiment.current, strict=True)]
            data["restarts"] = {str(attempts[0].rank): [{"attempt": m.attempt, "status": m.status,
                                                        "folder": m.run.path.name} for m in attempts]
                                for attempts in experiment.ranks.values() if len(attempts) > 1}
        else:
            data["attempts"] = [{
                "attempt": m.attempt, "status": m.status, "steps": m.run.state.steps,
                "last_step": m.run.state.last_step, "step_rate": m.run.step_rate, "last_loss": m.last_loss,
                "workers": len(m.run.workers), "start_ns": m.run.state.start_ns,
                "last_seen_ns": m.run.last_time_ns, "folder": m.run.path.name} for m in experiment.members]
        if sum(rank is not None for rank in experiment.ranks) > 1:
            data["step_stragglers"] = [straggler_data(item) for item in experiment.step_stragglers()]
        data["recommendations"] = experiment.recommendations()
    data["run"] = run_data(head.run)
    return data


def straggler_data(item: Straggler) -> dict[str, Any]:
    return {**asdict(item), "ratio": item.ratio, "slower_by": item.slower_by, "clear": item.clear,
            "costly": item.costly}


def print_experiment(data: dict[str, Any]) -> None:
    """``show`` (``experiment_data``): a lone run as ever; a distributed one (or a lone one run again under
    its id) first as a whole, then its headline member (rank 0's latest attempt) in full."""
    whole, run = data["experiment"], data["run"]
    if whole["partial"]:
        console.print(f"{whole['headline_member']} of experiment {run['run']['id']}, alone (`lezea-otel show "
                      f"{whole['path']}` merges every rank and attempt)")
    if whole["partial"] or whole["members"] == 1:
        print_run(run)
        return
    console.rule(f"{whole['name'] or '?'} ({whole['id']})")
    job = whole["job_id"] and f"job {whole['job_id']}"
    how = ", ".join(part for part in (whole["launcher"], job) if part)
    console.print(f"experiment {whole['status']}, {whole['ranks']}, {whole['duration_s']:.1f} s"
                  + (f" ({how})" if how else ""))
    if "ranks" in data:
        _print_ranks(data)
    else:
        _print_attempts(data["attempts"])
    if "step_stragglers" in data:
        _print_step_stragglers(data["step_stragglers"])
    for item in data["recommendations"]:  # ranks that ended early or went silent, stragglers
        console.print(f"[{item['severity']}] {item['message']}", markup=False)
    print_run(run, title=f"{whole['headline_member']}, the headline (give a member's folder as RUN to see "
                         "another)")


def _print_ranks(data: dict[str, Any]) -> None:
    """A row per rank (its latest attempt's figures, every attempt's number), then each restarted rank's
    attempts with their statuses and folders."""
    table = Table(title="Ranks")
    for column in ("rank", "node", "attempts", "status", "steps", "last step", "steps/s", "last loss",
                   "workers", "last seen (UTC)"):
        table.add_column(column)
    for row in data["ranks"]:
        table.add_row(num(row["rank"]), num(row["node_rank"]), ", ".join(map(str, row["attempts"])),
                      row["status"], str(row["steps"]), num(row["last_step"]), rate(row["step_rate"]),
                      num(row["last_loss"]), str(row["workers"]) if row["workers"] else "-",
                      when(row["last_seen_ns"]))
    console.print(table)
    for rank, attempts in data["restarts"].items():
        console.print(f"rank {rank} attempts: " + ", ".join(
            f"{m['attempt']} {m['status']} ({m['folder']})" for m in attempts))


def _print_attempts(attempts: list[dict[str, Any]]) -> None:
    """A lone run started again under its id: a row per attempt, the first in the experiment's folder."""
    table = Table(title="Attempts")
    for column in ("attempt", "status", "steps", "last step", "steps/s", "last loss", "workers",
                   "start (UTC)", "last seen (UTC)", "folder"):
        table.add_column(column)
    for row in attempts:
        table.add_row(str(row["attempt"]), row["status"], str(row["steps"]), num(row["last_step"]),
                      rate(row["step_rate"]), num(row["last_loss"]), str(row["workers"] or "-"),
                      when(row["start_ns"]), when(row["last_seen_ns"]), row["folder"])
    console.print(table)


def _print_step_stragglers(found: list[dict[str, Any]]) -> None:
    for item in found:
        if item["by"] == "last step":
            console.print(f"straggler by last step: rank {item['rank']} at step {item['value']:.0f}, "
                          f"{item['median'] - item['value']:.0f} steps behind rank {item['median_rank']} "
                          f"(the median rank, at step {item['median']:.0f})")
        else:
            console.print(f"straggler by step rate: rank {item['rank']} at {rate(item['value'])} steps/s, "
                          f"{1 - item['ratio']:.0%} slower than rank {item['median_rank']} "
                          f"(the median rank, {rate(item['median'])} steps/s)")
    if not found:
        console.print(f"no straggler: every rank at the same last step, within {RATE_TOLERANCE:.0%} of the "
                      "median rank's step rate")


def rate(value: float | None) -> str:
    """Steps per second as people read them: 1234, 56.7, 0.123."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def slow_data(experiment: Experiment, top: int) -> dict[str, Any]:
    """What ``slow`` prints and ``slow --json`` carries: the ``top`` phases and scopes by total time (over
    every rank and attempt; with GPU p50/p95/total where CUDA events measured them, and ranked by the GPU
    total when every instance of the top phases has one: ``ranked_by``), the slowest instances, and for a
    distributed run p50/p95 per rank and the straggler per phase."""
    merged = experiment.distributed
    timed = [(member, item) for member in experiment.members for item in member.run.timed]
    rows = timed_rows(item for _, item in timed)
    by = ranked_by(rows, top)
    rows = ranked(rows, by)
    data: dict[str, Any] = {"merged": merged, "ranked_by": by or "wall",
                            "gpu": any(item.gpu_duration_s is not None for _, item in timed),
                            "phases": [r for r in rows if r["kind"] == "phase"][:top],
                            "scopes": [r for r in rows if r["kind"] == "scope"][:top]}
    if merged:
        per_rank = rank_slow_table(experiment.timed_by_rank())
        names = list(dict.fromkeys((row["kind"], row["name"]) for row in per_rank))[:top]
        data["per_rank"] = [row for row in per_rank if (row["kind"], row["name"]) in names]
        data["stragglers"] = [straggler_data(item) for item in phase_stragglers(per_rank)
                              if (item.kind, item.by) in names]

    def measure(item: Timed) -> float:
        if by == "gpu" and item.kind == "phase":
            return item.gpu_duration_s if item.gpu_duration_s is not None else -1.0
        return item.duration_s

    ordered = sorted(timed, key=lambda pair: (pair[1].kind != "phase", -measure(pair[1])))
    data["instances"] = [{"rank": member.rank, "worker": item.worker, "kind": item.kind, "name": item.name,
                          "duration_s": item.duration_s, "gpu_duration_s": item.gpu_duration_s,
                          "step": item.step, "scope": item.scope, "trace_id": item.trace_id,
                          "span_id": item.span_id} for member, item in ordered[:top]]
    data["instances_total"] = len(timed)
    return data


def print_slow(data: dict[str, Any]) -> None:
    """``slow`` (``slow_data``): the tables, and one line saying which time the phases are ranked by
    where any phase has GPU time."""
    merged = data["merged"]
    if any(row["gpu_count"] for row in data["phases"]):
        console.print("Phases ranked by GPU time (CUDA events): every instance of the top phases has one"
                      if data["ranked_by"] == "gpu" else
                      "Phases ranked by wall time: not every instance of the top phases has GPU time "
                      "(CUDA events); GPU figures next to it where measured")
    for kind, title in (("phases", "Phases"), ("scopes", "Scopes")):
        by = "GPU total" if kind == "phases" and data["ranked_by"] == "gpu" else "total time"
        table = Table(title=f"{title} by {by}" + (" (all ranks)" if merged else ""))
        extra = any(row["gpu_count"] for row in data[kind])
        for column in ("name", "count", "total s", "p50 s", "p95 s", "max s",
                       *(("GPU total s", "GPU p50 s", "GPU p95 s") if extra else ())):
            table.add_column(column)
        for row in data[kind]:
            table.add_row(row["name"], str(row["count"]), f"{row['total_s']:.3f}", f"{row['p50_s']:.4f}",
                          f"{row['p95_s']:.4f}", f"{row['max_s']:.4f}",
                          *(_gpu_cells(row) if extra else ()))
        if table.row_count:
            console.print(table)
    if merged:
        _print_rank_phases(data)
    _print_instances(data)
    if not data["instances_total"]:
        console.print("This run recorded no scopes or phases (use tracker.span(...) or the *_scope calls).")


def _gpu_cells(row: dict[str, Any]) -> tuple[str, ...]:
    if not row["gpu_count"]:
        return ("-", "-", "-")
    some = f" ({row['gpu_count']} of {row['count']})" if row["gpu_count"] != row["count"] else ""
    return (f"{row['gpu_total_s']:.3f}{some}", f"{row['gpu_p50_s']:.4f}", f"{row['gpu_p95_s']:.4f}")


def _print_rank_phases(data: dict[str, Any]) -> None:
    table = Table(title="Per rank (p50/p95 of each rank's instances)")
    for column in ("kind", "name", "rank", "count", "total s", "p50 s", "p95 s", "max s"):
        table.add_column(column)
    for row in data["per_rank"]:
        table.add_row(row["kind"], row["name"], str(row["rank"]), str(row["count"]), f"{row['total_s']:.3f}",
                      f"{row['p50_s']:.4f}", f"{row['p95_s']:.4f}", f"{row['max_s']:.4f}")
    if table.row_count:
        console.print(table)
    stragglers = Table(title="Straggler per phase (the slowest rank's p50 vs the median rank's)")
    for column in ("kind", "name", "slowest rank", "its p50 s", "median rank", "its p50 s", "slower by"):
        stragglers.add_column(column)
    for item in data["stragglers"]:
        stragglers.add_row(item["kind"], item["by"], str(item["rank"]), f"{item['value']:.4f}",
                           str(item["median_rank"]), f"{item['median']:.4f}",
                           f"{item['ratio']:.2f}x (+{item['value'] - item['median']:.4f} s)")
    if stragglers.row_count:
        console.print(stragglers)


def _print_instances(data: dict[str, Any]) -> None:
    """The slowest instances with the step that was running (``analysis.attribution``; ``-``: none known)."""
    merged, gpu = data["merged"], data["gpu"]
    instances = Table(title="Slowest instances (paste the trace id into Tempo)")
    columns = ("kind", "name", "duration s", *(("GPU s",) if gpu else ()), "step", "trace id", "span id")
    for column in (("rank", *columns) if merged else columns):
        instances.add_column(column)
    for item in data["instances"]:
        where = ((num(item["rank"]) + (f" (worker {item['worker']})" if item["worker"] else ""),)
                 if merged else ())
        instances.add_row(*where, item["kind"], item["name"], f"{item['duration_s']:.4f}",
                          *((num(item["gpu_duration_s"]),) if gpu else ()), num(item["step"]),
                          item["trace_id"] or "-", item["span_id"] or "-")
    console.print(instances)
