"""The merged view of an experiment whose processes wrote one audit each: ``runs`` (one row per
experiment), ``show`` (a row per rank, the attempts, the straggler) and ``slow`` (phase p50/p95 per rank,
the straggler per phase). A lone run with one audit prints exactly as it always did."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from lezea_otel.cli.common import console, num, when
from lezea_otel.cli.show import print_run
from lezea_otel.model.experiment import RATE_TOLERANCE, Experiment, Member, load_experiment
from lezea_otel.model.runs import Timed, run_folders
from lezea_otel.model.timing import Straggler, phase_stragglers, rank_slow_table, slow_table


def print_runs(folder: Path) -> None:
    """One row per experiment: its status over all ranks, the ranks' states, the headline rank's figures
    (the last seen time without its date when that is the start's)."""
    folders = run_folders(folder)
    if not folders:
        console.print(f"No runs in {folder}.")
        return
    experiments = [load_experiment(path) for path in folders]
    purposes = any(e.headline.run.start.get("purpose") for e in experiments)  # a column only when used
    table = Table(title=f"Runs in {folder}")
    for column in ("id", "name", *(("purpose",) if purposes else ()), "status", "ranks", "start (UTC)",
                   "last seen", "duration", "steps", "last loss", "best loss", "delivery"):
        table.add_column(column, overflow="fold", no_wrap=column in ("status", "ranks"))
    for experiment in experiments:
        run = experiment.headline.run
        loss = run.main_loss()
        stats = run.state.metrics[loss].as_dict() if loss else {}
        targets = run.start.get("targets", [])
        delivery = "OTLP" if any(t.startswith("OTLP") for t in targets) else "local"
        start, last = when(experiment.start_ns), when(experiment.last_time_ns)
        table.add_row(experiment.id[:8], run.start.get("name") or "?",
                      *((run.start.get("purpose", ""),) if purposes else ()), experiment.status,
                      experiment.state_text(), start, last[11:] if last[:10] == start[:10] else last,
                      f"{experiment.duration_s:.1f} s", str(run.state.steps), num(stats.get("last")),
                      num(stats.get("best")), delivery)
    console.print(table)


def print_experiment(experiment: Experiment) -> None:
    """``show``: a lone run as ever; a distributed one (or a lone one run again under its id) first as a
    whole, then its headline member (rank 0's latest attempt) in full."""
    head = experiment.headline
    if experiment.partial:
        console.print(f"{head.label} of experiment {head.run.id}, alone (`lezea-otel show {experiment.path}` "
                      "merges every rank and attempt)")
    if experiment.partial or len(experiment.members) == 1:
        print_run(head.run)
        return
    console.rule(f"{head.run.start.get('name', '?')} ({experiment.id})")
    launch = head.run.launch
    job = launch.get("job_id")
    how = ", ".join(part for part in (launch.get("launcher"), job and f"job {job}") if part)
    console.print(f"experiment {experiment.status}, {experiment.state_text()}, {experiment.duration_s:.1f} s"
                  + (f" ({how})" if how else ""))
    if experiment.distributed:
        _print_ranks(experiment)
    else:
        _print_attempts(experiment)
    if sum(rank is not None for rank in experiment.ranks) > 1:
        _print_step_stragglers(experiment.step_stragglers())
    for item in experiment.recommendations():  # ranks that ended early or went silent, stragglers
        console.print(f"[{item['severity']}] {item['message']}", markup=False)
    print_run(head.run, title=f"{head.label}, the headline (give a member's folder as RUN to see another)")


def _print_ranks(experiment: Experiment) -> None:
    """A row per rank (its latest attempt's figures, every attempt's number), then each restarted rank's
    attempts with their statuses and folders."""
    table = Table(title="Ranks")
    for column in ("rank", "node", "attempts", "status", "steps", "last step", "steps/s", "last loss",
                   "workers", "last seen (UTC)"):
        table.add_column(column)
    for row, member in zip(experiment.rank_rows(), experiment.current, strict=True):
        table.add_row(num(row.rank), num(row.node_rank), ", ".join(map(str, row.attempts)), row.status,
                      str(row.steps), num(row.last_step), rate(row.step_rate), num(row.last_loss),
                      str(row.workers) if row.workers else "-", when(member.run.last_time_ns))
    console.print(table)
    for attempts in experiment.ranks.values():
        if len(attempts) > 1:
            console.print(f"{attempts[0].label} attempts: " + ", ".join(
                f"{m.attempt} {m.status} ({m.run.path.name})" for m in attempts))


def _print_attempts(experiment: Experiment) -> None:
    """A lone run started again under its id: a row per attempt, the first in the experiment's folder."""
    table = Table(title="Attempts")
    for column in ("attempt", "status", "steps", "last step", "steps/s", "last loss", "workers",
                   "start (UTC)", "last seen (UTC)", "folder"):
        table.add_column(column)
    for member in experiment.members:
        run = member.run
        workers = str(len(run.workers)) if run.workers else "-"
        table.add_row(str(member.attempt), member.status, str(run.state.steps), num(run.state.last_step),
                      rate(run.step_rate), num(member.last_loss), workers, when(run.state.start_ns),
                      when(run.last_time_ns), run.path.name)
    console.print(table)


def _print_step_stragglers(found: list[Straggler]) -> None:
    for item in found:
        if item.by == "last step":
            console.print(f"straggler by last step: rank {item.rank} at step {item.value:.0f}, "
                          f"{item.median - item.value:.0f} steps behind rank {item.median_rank} "
                          f"(the median rank, at step {item.median:.0f})")
        else:
            console.print(f"straggler by step rate: rank {item.rank} at {rate(item.value)} steps/s, "
                          f"{1 - item.ratio:.0%} slower than rank {item.median_rank} "
                          f"(the median rank, {rate(item.median)} steps/s)")
    if not found:
        console.print(f"no straggler: every rank at the same last step, within {RATE_TOLERANCE:.0%} of the "
                      "median rank's step rate")


def rate(value: float | None) -> str:
    """Steps per second as people read them: 1234, 56.7, 0.123."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def print_slow(experiment: Experiment, top: int) -> None:
    """``slow``: scopes and phases by total time (over every rank and attempt), their slowest instances;
    for a distributed run also p50/p95 per rank and the straggler per phase."""
    merged = experiment.distributed
    timed = [(member, item) for member in experiment.members for item in member.run.timed]
    rows = slow_table(item for _, item in timed)
    for kind, title in (("phase", "Phases"), ("scope", "Scopes")):
        table = Table(title=f"{title} by total time" + (" (all ranks)" if merged else ""))
        for column in ("name", "count", "total s", "p50 s", "p95 s", "max s"):
            table.add_column(column)
        for row in [r for r in rows if r["kind"] == kind][:top]:
            table.add_row(row["name"], str(row["count"]), f"{row['total_s']:.3f}", f"{row['p50_s']:.4f}",
                          f"{row['p95_s']:.4f}", f"{row['max_s']:.4f}")
        if table.row_count:
            console.print(table)
    if merged:
        _print_rank_phases(experiment, top)
    _print_instances(timed, top, merged)
    if not timed:
        console.print("This run recorded no scopes or phases (use tracker.span(...) or the *_scope calls).")


def _print_rank_phases(experiment: Experiment, top: int) -> None:
    rows = rank_slow_table(experiment.timed_by_rank())
    names = list(dict.fromkeys((row["kind"], row["name"]) for row in rows))[:top]
    table = Table(title="Per rank (p50/p95 of each rank's instances)")
    for column in ("kind", "name", "rank", "count", "total s", "p50 s", "p95 s", "max s"):
        table.add_column(column)
    for row in (r for r in rows if (r["kind"], r["name"]) in names):
        table.add_row(row["kind"], row["name"], str(row["rank"]), str(row["count"]), f"{row['total_s']:.3f}",
                      f"{row['p50_s']:.4f}", f"{row['p95_s']:.4f}", f"{row['max_s']:.4f}")
    if table.row_count:
        console.print(table)
    stragglers = Table(title="Straggler per phase (the slowest rank's p50 vs the median rank's)")
    for column in ("kind", "name", "slowest rank", "its p50 s", "median rank", "its p50 s", "slower by"):
        stragglers.add_column(column)
    for item in phase_stragglers(rows):
        if (item.kind, item.by) in names:
            stragglers.add_row(item.kind, item.by, str(item.rank), f"{item.value:.4f}", str(item.median_rank),
                               f"{item.median:.4f}", f"{item.ratio:.2f}x (+{item.value - item.median:.4f} s)")
    if stragglers.row_count:
        console.print(stragglers)


def _print_instances(timed: list[tuple[Member, Timed]], top: int, merged: bool) -> None:
    instances = Table(title="Slowest instances (paste the trace id into Tempo)")
    columns = ("kind", "name", "duration s", "step", "trace id", "span id")
    for column in (("rank", *columns) if merged else columns):
        instances.add_column(column)
    ranked = sorted(timed, key=lambda pair: (pair[1].kind != "phase", -pair[1].duration_s))
    for member, item in ranked[:top]:
        where = ((num(member.rank) + (f" (worker {item.worker})" if item.worker else ""),) if merged else ())
        instances.add_row(*where, item.kind, item.name, f"{item.duration_s:.4f}", str(item.step),
                          item.trace_id or "-", item.span_id or "-")
    console.print(instances)
