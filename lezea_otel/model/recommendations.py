"""Advice drawn from what this run recorded (``recommend``), or what the ranks of a distributed one show
side by side (``recommend_ranks``); every item cites the evidence it rests on."""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lezea_otel.model.metric_stats import EVAL_SPLITS
from lezea_otel.model.run_state import MetricStats, RunState

if TYPE_CHECKING:  # the experiment is made of runs, whose advice is this module's: no import at run time
    from lezea_otel.model.experiment import Experiment, Member
    from lezea_otel.model.timing import Straggler

PLATEAU_MIN_POINTS = 20
PLATEAU_REL_CHANGE = 0.01
RISING_POINTS = 5
"""Values in a row over twice a loss's best before it counts as rising (the LezeaLossDiverging alert's
rule, in values rather than minutes)."""
GPU_IDLE_PERCENT = 30.0
SLOW_PHASE_SHARE = 0.5
DATA_WAIT_SHARE = 0.2
"""The loop waiting for data (``tracker.iterate``) this share of the run or more is worth a recommendation."""
SILENT_INTERVALS = 10
"""A rank stopped reporting when the others' newest record is this many of its step intervals past its last
one (and ``SILENT_MIN_S``) while it has no end record."""
SILENT_MIN_S = 1.0
"""Never less than this: five times the audit's flush interval (200 ms), so a rank whose last lines are
still on their way to the file is not one that stopped."""
LISTED_RANKS = 4
"""Up to this many other ranks are named one by one in a recommendation; more are summed up."""


def _item(rule: str, severity: str, message: str, **evidence: Any) -> dict[str, Any]:
    return {"rule": rule, "severity": severity, "message": message, "evidence": evidence}


def _loss_keys(state: RunState) -> list[tuple[str, MetricStats]]:
    return [(key, stats) for key, stats in state.metrics.items()  # a delta is a rate, not a loss
            if stats.lower_better and not key.rsplit("/", 1)[-1].startswith("delta")]


def _evaluation_improving(state: RunState, train: MetricStats) -> tuple[str, float, float] | None:
    """(name, earlier, latest) of an evaluation series of the same key (``val/loss`` beside ``loss``, in any
    scope: one epoch scope each, say) that is still improving: its latest value its best, better than
    the one before it by ``PLATEAU_REL_CHANGE``. A training loss that is flat while the validation loss
    still falls has not plateaued in any sense that should stop the run."""
    if train.split not in (None, "train"):
        return None
    series = sorted((stats for stats in state.metrics.values()
                     if stats.key == train.key and stats.split in EVAL_SPLITS and stats.goal == train.goal),
                    key=lambda stats: stats.last_seq)  # the series logged last, last
    values = [value for stats in series for value in stats.recent]
    if len(values) < 2:
        return None
    earlier, latest, name = values[-2], values[-1], series[-1].name
    better = latest < earlier if train.lower_better else latest > earlier
    best = min(values) if train.lower_better else max(values)
    if better and latest == best and abs(earlier - latest) >= PLATEAU_REL_CHANGE * max(abs(earlier), 1e-12):
        return name, earlier, latest
    return None


def recommend(state: RunState, cost_limit_eur: float | None, duration_s: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if state.status in ("running", "finished") and state.steps == 0:
        out.append(_item("no_steps", "info",
                         "No training step was logged; metrics and curves will be empty."))
    latest: dict[tuple[str, str | None], MetricStats] = {}  # per key and split, the series logged last
    for _name, stats in sorted(_loss_keys(state), key=lambda item: item[1].last_seq):
        latest[(stats.key, stats.split)] = stats  # an earlier epoch scope's flat loss is history, not now
    for key, stats in _loss_keys(state):
        if stats.nonfinite:
            out.append(_item(
                "nonfinite_loss", "critical",
                f"{key} became non-finite at step {stats.first_nonfinite_step} ({stats.nonfinite} of "
                f"{stats.count} values): the run diverged. Lower the learning rate, clip gradients, or check "
                "the data of that step.",
                key=key, first_step=stats.first_nonfinite_step, count=stats.nonfinite))
            continue
        recent = list(stats.recent)
        if len(recent) >= PLATEAU_MIN_POINTS and stats is latest.get((stats.key, stats.split)):
            half = len(recent) // 2
            before = sum(recent[:half]) / half
            after = sum(recent[half:]) / (len(recent) - half)
            scale = max(abs(before), 1e-12)
            improving = _evaluation_improving(state, stats)
            if abs(before - after) / scale < PLATEAU_REL_CHANGE and improving is None:
                out.append(_item(
                    "loss_plateau", "warning",
                    f"{key} has plateaued: the mean of its last {len(recent) - half} values ({after:.4g}) "
                    f"is within {PLATEAU_REL_CHANGE:.0%} of the {half} before ({before:.4g}). Consider a "
                    "learning-rate schedule, early stopping, or more capacity.",
                    key=key, before=before, after=after, points=len(recent)))
        # Rising: even the best of its last RISING_POINTS values is over twice its best (one noisy
        # minibatch is not a trend), judged on the series logged last (an earlier epoch's is history).
        lately = recent[-RISING_POINTS:]
        if (len(lately) == RISING_POINTS and stats is latest.get((stats.key, stats.split))
                and math.isfinite(stats.best) and stats.best > 0 and min(lately) > 2 * stats.best):
            out.append(_item(
                "loss_rising", "warning",
                f"{key} is {stats.last:.4g} now, and none of its last {RISING_POINTS} values came within "
                f"twice its best {stats.best:.4g} (step {stats.best_step}): training may be diverging or "
                "overfitting.",
                key=key, last=stats.last, best=stats.best, best_step=stats.best_step))
    waited = {name: phase for name, phase in state.phases.items() if phase.get("data_wait")}
    wait_s = sum(phase["total_s"] for phase in waited.values())
    wait_text = (f"; the loop waited {wait_s:.1f} s for data ({wait_s / duration_s:.0%} of the run, phase "
                 + ", ".join(repr(name) for name in waited) + ")") if waited and duration_s > 0 else ""
    for component, totals in state.resource_totals().items():
        mean = totals.get("gpu_percent_mean")
        if mean is not None and mean < GPU_IDLE_PERCENT:
            out.append(_item(
                "gpu_idle", "warning",
                f"GPU of {component} was {mean:.0f}% busy on average{wait_text}: the input pipeline or the "
                "CPU side is likely the bottleneck (more DataLoader workers, pinned memory, larger batches).",
                component=component, gpu_percent_mean=mean, data_wait_s=wait_s if waited else None))
    if waited and duration_s > 0 and wait_s > DATA_WAIT_SHARE * duration_s:
        batches = sum(phase["count"] for phase in waited.values())
        out.append(_item(
            "data_wait", "warning",
            f"The loop waited {wait_s:.1f} s for its data, {wait_s / duration_s:.0%} of the run's "
            f"{duration_s:.1f} s ({wait_s / max(batches, 1) * 1e3:.3g} ms a batch over {batches} batches): "
            "the input pipeline is the bottleneck (more DataLoader workers, persistent_workers, "
            "pin_memory, a larger prefetch_factor, or a faster dataset).",
            phases=sorted(waited), wait_s=wait_s, share=wait_s / duration_s, batches=batches))
    total_eur = state.total_cost_eur()
    if cost_limit_eur is not None and total_eur > cost_limit_eur:
        out.append(_item(
            "cost_over_limit", "critical",
            f"The run cost {total_eur:.2f} EUR, above the limit of {cost_limit_eur:.2f} EUR "
            "(LEZEA_COST_LIMIT_EUR).",
            cost_eur=total_eur, limit_eur=cost_limit_eur))
    for name, phase in state.phases.items():
        if duration_s > 0 and phase["total_s"] > SLOW_PHASE_SHARE * duration_s and phase["count"] > 0:
            out.append(_item(
                "slow_phase", "info",
                f"Phase {name!r} took {phase['total_s']:.1f} s of the run's {duration_s:.1f} s "
                f"({phase['total_s'] / duration_s:.0%}); it is where speed-ups pay most.",
                phase=name, total_s=phase["total_s"], share=phase["total_s"] / duration_s))
    for path, scope in {**state.scopes, **state.phases}.items():
        if scope["errors"]:
            out.append(_item(
                "scope_errors", "warning",
                f"{path} raised an exception {scope['errors']} time(s); see the span status in the trace.",
                scope=path, errors=scope["errors"]))
    return out


def recommend_ranks(experiment: Experiment) -> list[dict[str, Any]]:
    """For an experiment of two ranks or more (each rank's latest attempt):

    - ``rank_ended`` per rank that crashed (no end record, its process gone), failed or was terminated,
      with its last step and how far the other ranks went on;
    - ``rank_silent`` per rank with no end record whose last record is older than the newest record of
      the other ranks by ``SILENT_INTERVALS`` of its own step intervals (the median rank's when it has
      none) and by ``SILENT_MIN_S`` at least: alive but hung, or on another host that is lost;
    - ``straggler`` per rank that is the slowest by step rate or by the p50 of a phase or scope, and
      costly (``Straggler.costly``: ``STRAGGLER_TOLERANCE`` slower than the median rank, and losing that
      share of its run by it), with what it lost.

    A lone run, or one rank alone, gets [] (its own advice is ``Run.recommendations``)."""
    current = [member for member in experiment.current if member.rank is not None]
    if len(current) < 2:
        return []
    out: list[dict[str, Any]] = []
    for member in current:
        others = [other for other in current if other is not member]
        if member.broken:
            out.append(_rank_ended(member, others))
        elif member.live:
            silent = _rank_silent(member, others)
            if silent is not None:
                out.append(silent)
    by_rank: dict[int, list[Straggler]] = {}
    for item in [*experiment.step_stragglers(), *experiment.phase_stragglers()]:
        if item.by != "last step" and item.costly:  # being behind is told by the rank's end or silence
            by_rank.setdefault(item.rank, []).append(item)
    out.extend(_straggler(rank, found) for rank, found in sorted(by_rank.items()))
    return out


def _rank_ended(member: Member, others: list[Member]) -> dict[str, Any]:
    run, step = member.run, member.run.state.last_step
    went_on = _went_on(others)
    evidence: dict[str, Any] = {"rank": member.rank, "status": member.status, "last_step": step,
                                "last_record_ns": run.last_time_ns,
                                "others_last_step": {o.rank: o.run.state.last_step for o in others}}
    if member.status == "crashed":
        cause = run.crash_cause()
        evidence["causes"] = cause["evidence"]["causes"]
        return _item("rank_ended", "critical", f"{member.label}: {cause['message']} {went_on}", **evidence)
    if member.status == "failed":
        error = (run.end or {}).get("error") or "no error text"
        return _item("rank_ended", "critical", f"{member.label} failed after step {step}: {error}. {went_on}",
                     error=error, **evidence)
    ended_by = (run.end or {}).get("ended_by") or "a signal"
    return _item("rank_ended", "warning", f"{member.label} was terminated ({ended_by}) after step {step}. "
                 f"{went_on}", ended_by=ended_by, **evidence)


def _went_on(others: list[Member]) -> str:
    """``The other ranks went on: rank 0 to step 10 (finished), ...``; summed up past ``LISTED_RANKS``."""
    if len(others) <= LISTED_RANKS:
        return "The other ranks went on: " + ", ".join(
            f"{o.label} to step {o.run.state.last_step} ({o.status})" for o in others) + "."
    steps = [o.run.state.last_step for o in others if o.run.state.last_step is not None]
    statuses: dict[str, int] = {}
    for other in others:
        statuses[other.status] = statuses.get(other.status, 0) + 1
    reach = f" to steps {min(steps)} to {max(steps)}" if steps else ""
    return (f"The {len(others)} other ranks went on{reach} ("
            + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) + ").")


def _interval(member: Member, others: list[Member]) -> float | None:
    """Seconds between two training steps of ``member``, else of the median other rank; ``None`` when no
    rank stepped twice."""
    rate = member.run.step_rate
    if rate:
        return 1 / rate
    rates = [o.run.step_rate for o in others if o.run.step_rate]
    return 1 / statistics.median(rates) if rates else None


def _rank_silent(member: Member, others: list[Member]) -> dict[str, Any] | None:
    run = member.run
    newest = max(others, key=lambda o: o.run.last_time_ns)
    lag = (newest.run.last_time_ns - run.last_time_ns) / 1e9
    interval = _interval(member, others)
    if lag < max(SILENT_MIN_S, SILENT_INTERVALS * interval if interval else 0.0):
        return None
    step, at = run.state.last_step, _clock(run.last_time_ns)
    pace = f", {lag / interval:.0f} times its step interval ({interval:.3g} s)," if interval else ""
    pid, host = run.start.get("pid"), run.start.get("host")
    if member.status == "running":
        where = (f"Its process (pid {pid}) is still alive on this host: likely hung (a collective waiting "
                 f"for a peer, a deadlock, a stuck data loader); `py-spy dump --pid {pid}` shows where.")
    else:
        where = (f"It ran on {host or 'another host'}, which this machine cannot check: the node may be "
                 "lost, or the rank hung there.")
    return _item("rank_silent", "warning",
                 f"{member.label} stopped reporting: its last record (step {step}, {at} UTC) is {lag:.1f} s "
                 f"older than {newest.label}'s newest (step {newest.run.state.last_step}){pace} and it has "
                 f"no end record. {where}",
                 rank=member.rank, status=member.status, last_step=step, last_record_ns=run.last_time_ns,
                 lag_s=lag, interval_s=interval, newest_rank=newest.rank, pid=pid, host=host)


def _clock(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S")


def _straggler(rank: int, found: list[Straggler]) -> dict[str, Any]:
    """One recommendation per slow rank, every measure it is costly by (the largest first)."""
    parts = []
    for item in sorted(found, key=lambda s: -s.slower_by):
        lost = (f", {item.lost_s:.3g} s lost ({item.share:.0%} of its run)"
                if item.lost_s is not None and item.share is not None else "")
        if item.kind == "steps":
            parts.append(f"{item.value:.3g} steps/s, {item.slower_by:.0%} slower than rank "
                         f"{item.median_rank}'s {item.median:.3g} steps/s (the median rank){lost}")
        else:
            parts.append(f"{item.kind} {item.by!r} p50 {item.value:.4g} s, {item.ratio:.2f}x rank "
                         f"{item.median_rank}'s {item.median:.4g} s (the median rank){lost}")
    return _item("straggler", "warning",
                 f"rank {rank} is a straggler: {'; '.join(parts)}. In a synchronous job every step waits for "
                 f"the slowest rank: look at what differs on rank {rank} (its node, its data shard, its "
                 "input pipeline, CPU or GPU contention).",
                 rank=rank, measures=[{"by": s.by, "kind": s.kind, "value": s.value, "median": s.median,
                                       "median_rank": s.median_rank, "slower_by": s.slower_by,
                                       "lost_s": s.lost_s, "share": s.share}
                                      for s in found])
