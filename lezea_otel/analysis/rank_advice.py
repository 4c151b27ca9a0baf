"""Advice drawn from what the ranks of a distributed run show side by side (``recommend_ranks``): ranks
that ended early, went silent, or lag; every item cites the evidence it rests on, as a run's own advice
(``model.recommendations``) does."""

from __future__ import annotations

import statistics
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lezea_otel.analysis.timing import Straggler
from lezea_otel.model.recommendations import advice_item as _item

if TYPE_CHECKING:  # the experiment asks for this advice: no import of it at run time
    from lezea_otel.analysis.experiment import Experiment, Member

SILENT_INTERVALS = 10
"""A rank stopped reporting when the others' newest record is this many of its step intervals past its last
one (and ``SILENT_MIN_S``) while it has no end record."""
SILENT_MIN_S = 1.0
"""Never less than this: five times the audit's flush interval (200 ms), so a rank whose last lines are
still on their way to the file is not one that stopped."""
LISTED_RANKS = 4
"""Up to this many other ranks are named one by one in a recommendation; more are summed up."""


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
