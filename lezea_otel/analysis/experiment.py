"""One experiment as all of its processes ran it: the ranks of a distributed launch, their restarts, and
the earlier attempts of a lone run whose id was used again, merged into what ``runs``, ``show`` and
``slow`` print. Each member is a ``Run`` of its own (its audit and its forked workers, ``load_run``); this
module only puts them side by side: no rank ever talked to another, so neither does the reader.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.analysis.rank_advice import recommend_ranks
from lezea_otel.analysis.runs import Run, Timed, load_run
from lezea_otel.analysis.timing import (
    STRAGGLER_TOLERANCE,
    Straggler,
    phase_stragglers,
    rank_slow_table,
    straggler,
)
from lezea_otel.model.layout import is_member, members, parse_member

ENDED = ("crashed", "failed", "terminated", names.STATUS_ABANDONED, "finished")
"""The statuses of a member that ended, in the order one wins over the next for a whole experiment."""
BROKEN = frozenset(ENDED[:3])
LIVE = ("running", "unknown")
"""A member without an end record whose process is alive, or on another host (it cannot be told here)."""
RATE_TOLERANCE = STRAGGLER_TOLERANCE
"""A rank is a straggler by step rate when it is this share slower than the median rank, or more."""


@dataclass
class Member:
    """One process of the experiment: its rank (``None``: a lone run), its attempt (the number in its
    folder's name) and its run."""

    rank: int | None
    attempt: int
    run: Run

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def broken(self) -> bool:
        """It ended crashed, failed or terminated: before its work was done."""
        return self.status in BROKEN

    @property
    def live(self) -> bool:
        """No end record, and not known to be dead: running here, or on another host."""
        return self.status in LIVE

    @property
    def node_rank(self) -> int | None:
        node = self.run.launch.get("node_rank")
        return node if type(node) is int else None

    @property
    def label(self) -> str:
        who = f"rank {self.rank}" if self.rank is not None else "run"
        return who + (f" attempt {self.attempt}" if self.attempt else "")

    @property
    def last_loss(self) -> float | None:
        loss = self.run.main_loss()
        return self.run.state.metrics[loss].last if loss else None


@dataclass
class RankRow:
    """What ``show`` prints per rank: its latest attempt's figures, and every attempt it had."""

    rank: int | None
    node_rank: int | None
    attempts: list[int]
    status: str
    steps: int
    last_step: int | None
    step_rate: float | None
    last_loss: float | None
    workers: int


@dataclass
class Experiment:
    """The members of one experiment folder, by rank then attempt. ``partial``: opened from one member's
    folder (a path to ``rank-<r>/``): that member alone, as its own run."""

    path: Path
    members: list[Member]
    partial: bool = False

    @property
    def ranks(self) -> dict[int | None, list[Member]]:
        """Every attempt of each rank, oldest first (a lone run's attempts under ``None``)."""
        found: dict[int | None, list[Member]] = {}
        for member in self.members:
            found.setdefault(member.rank, []).append(member)
        return found

    @property
    def current(self) -> list[Member]:
        """Each rank's latest attempt: a restart supersedes what its rank did before."""
        return [attempts[-1] for attempts in self.ranks.values()]

    @property
    def headline(self) -> Member:
        """The member the experiment is summed up by: rank 0 (or the lowest rank seen), latest attempt."""
        return self.current[0]

    @property
    def distributed(self) -> bool:
        return any(member.rank is not None for member in self.members)

    @property
    def id(self) -> str:
        return self.headline.run.id

    @property
    def world_size(self) -> int:
        """From the launch facts of the ranks' latest attempts (the largest, should an elastic launch have
        changed it); else the number of ranks seen."""
        sizes = [m.run.launch.get("world_size") for m in self.current]
        known = [size for size in sizes if type(size) is int and size > 0]
        return max(known) if known else len([m for m in self.current if m.rank is not None]) or 1

    @property
    def unseen(self) -> int:
        """Ranks the launch facts promise but no folder holds (not started yet, or on a node whose
        filesystem this one does not share)."""
        seen = {m.rank for m in self.members if m.rank is not None}
        return max(0, self.world_size - len(seen)) if self.distributed else 0

    @property
    def status(self) -> str:
        """From the ranks' latest attempts: any rank that ended crashed, failed or terminated while another
        still runs (or cannot be told, on another host) -> ``degraded``; otherwise ``running`` while one
        runs (``unknown`` when the live ones are all elsewhere); once all ended, the first of crashed,
        failed, terminated, abandoned, finished that any rank has wins: crashed before failed (a failure
        said why, a crash did not) and both before terminated (someone stopped it). Unseen ranks are counted
        in ``state_text``, not here: a rank that never wrote a record has no state to tell."""
        states = {m.status for m in self.current}
        live = states & set(LIVE)
        if live:
            if states & BROKEN:
                return "degraded"
            return "running" if "running" in live else "unknown"
        return next((status for status in (*ENDED, names.STATUS_NOT_STARTED) if status in states), "finished")

    def state_text(self) -> str:
        """``4 ranks: 3 finished, 1 crashed`` (with ``, 1 not seen`` and the restarts when there are)."""
        counts = Counter(m.status for m in self.current)
        parts = [f"{n} {status}" for status, n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]
        if self.unseen:
            parts.append(f"{self.unseen} not seen")
        restarts = sum(len(attempts) - 1 for attempts in self.ranks.values())
        again = f"; {restarts} earlier attempt{'s' * (restarts != 1)}" if restarts else ""
        if not self.distributed:
            return f"{len(self.members)} attempts" if restarts else "-"
        size = self.world_size
        return f"{size} rank{'s' * (size != 1)}: {', '.join(parts)}{again}"

    @property
    def start_ns(self) -> int | None:
        starts = [m.run.state.start_ns for m in self.members if m.run.state.start_ns]
        return min(starts) if starts else None

    @property
    def last_time_ns(self) -> int:
        return max(m.run.state.end_ns or m.run.last_time_ns for m in self.members)

    @property
    def duration_s(self) -> float:
        start = self.start_ns
        return max(0.0, (self.last_time_ns - start) / 1e9) if start else 0.0

    def rank_rows(self) -> list[RankRow]:
        rows = []
        for attempts in self.ranks.values():
            member = attempts[-1]
            run = member.run
            rows.append(RankRow(member.rank, member.node_rank, [m.attempt for m in attempts], member.status,
                                run.state.steps, run.state.last_step, run.step_rate, member.last_loss,
                                len(run.workers)))
        return rows

    def step_stragglers(self) -> list[Straggler]:
        """The rank furthest behind by last step (when the ranks' last steps differ at all) and the rank
        slowest by step rate (when it is ``RATE_TOLERANCE`` slower than the median rank, or more), with
        the time it lost against the median rank's rate and its share of the rank's run."""
        rows = [row for row in self.rank_rows() if row.rank is not None]
        found = []
        behind = straggler("last step", "steps", {r.rank: float(r.last_step) for r in rows
                                                  if r.rank is not None and r.last_step is not None},
                           slower_is_higher=False)
        if behind is not None:
            found.append(behind)
        slow = straggler("step rate", "steps", {r.rank: r.step_rate for r in rows
                                                if r.rank is not None and r.step_rate is not None},
                         slower_is_higher=False)
        if slow is not None and slow.clear:
            run = next(m.run for m in self.current if m.rank == slow.rank)
            stepping = ((run.last_step_at[0] - run.first_step_at[0]) / 1e9
                        if run.first_step_at and run.last_step_at else 0.0)
            lost = stepping * slow.slower_by  # its steps at the median rank's rate would have taken this less
            found.append(replace(slow, lost_s=lost, share=lost / run.duration_s if run.duration_s else None))
        return found

    def phase_stragglers(self) -> list[Straggler]:
        """Per scope and phase two ranks or more timed: the rank with the highest p50 against the median
        rank's, with the share of the rank's run (its attempts' durations) it lost there (every one, clear
        or not: ``Straggler.clear`` and ``Straggler.costly`` tell)."""
        durations: dict[int, float] = {}
        for member in self.members:
            if member.rank is not None:
                durations[member.rank] = durations.get(member.rank, 0.0) + member.run.duration_s
        return phase_stragglers(rank_slow_table(self.timed_by_rank()), durations)

    def recommendations(self) -> list[dict[str, Any]]:
        """What the ranks side by side call for (``recommend_ranks``): ranks that ended early or stopped
        reporting while others went on, and costly stragglers; [] for a lone run and a single rank."""
        return recommend_ranks(self)

    def timed_by_rank(self) -> dict[int, list[Timed]]:
        """Every scope and phase each rank timed, over all of its attempts (and its workers)."""
        found: dict[int, list[Timed]] = {}
        for member in self.members:
            if member.rank is not None:
                found.setdefault(member.rank, []).extend(member.run.timed)
        return found

    def timed(self) -> list[Timed]:
        return [item for member in self.members for item in member.run.timed]


def load_experiment(path: Path) -> Experiment:
    """The experiment in ``path`` with every member loaded; a rank's or attempt's folder opens that member
    alone (``partial``), and a folder of no known layout is read as one run."""
    parsed = parse_member(path.name)
    if parsed is not None and is_member(path):
        return Experiment(path.parent, [Member(*parsed, load_run(path))], partial=True)
    folders = members(path)
    if not folders:
        return Experiment(path, [Member(None, 0, load_run(path))])
    return Experiment(path, [Member(f.rank, f.attempt, load_run(f.path)) for f in folders])

