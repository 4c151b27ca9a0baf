"""How long scopes and phases took: per name for one run, per name and rank for a distributed one, and
the straggler (the slowest rank) compared with the median rank."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from lezea_otel.analysis.runs import Timed

STRAGGLER_TOLERANCE = 0.1
"""A rank is clearly a straggler when it is this share slower than the median rank, or more: its step rate
this much lower, or its p50 of a phase this much longer; and worth a recommendation when it also lost this
share of its run by it: a phase of a millisecond is 3x slower on one rank by chance (a busier core), and a
toy loop of a few steps 30 % slower, and neither costs the run anything."""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def slow_table(timed: Iterable[Timed]) -> list[dict[str, Any]]:
    """Per scope/phase name: count, total, p50, p95, max; slowest first by total."""
    by_name: dict[tuple[str, str], list[float]] = {}
    for item in timed:
        by_name.setdefault((item.kind, item.name), []).append(item.duration_s)
    rows = [_row(kind, name, d) for (kind, name), d in by_name.items()]
    return sorted(rows, key=lambda row: row["total_s"], reverse=True)


def _row(kind: str, name: str, durations: list[float]) -> dict[str, Any]:
    return {"kind": kind, "name": name, "count": len(durations), "total_s": sum(durations),
            "p50_s": percentile(durations, 0.5), "p95_s": percentile(durations, 0.95),
            "max_s": max(durations)}


@dataclass(frozen=True)
class Straggler:
    """The slowest rank by one measure, and the median rank by it: the middle of the ranks ordered from
    slowest to fastest (with two ranks, the other one), so the comparison is always with a rank that ran."""

    by: str
    """What was compared: ``step rate``, ``last step``, or a phase's or scope's name."""
    kind: str
    """``steps``, ``phase`` or ``scope``."""
    rank: int
    value: float
    median_rank: int
    median: float
    lost_s: float | None = None
    """What the straggler lost against the median rank: in a phase or scope, (its p50 - the median's) x its
    count; by step rate, its time stepping x ``slower_by``; ``None`` when not worked out (by last step)."""
    share: float | None = None
    """``lost_s`` as a share of the straggler's run; ``None`` when not known."""

    @property
    def ratio(self) -> float:
        """How many times the median rank's value the straggler's is (``inf`` when the median's is 0)."""
        return self.value / self.median if self.median else math.inf

    @property
    def slower_by(self) -> float:
        """The share by which the straggler is slower than the median rank: for steps (rate, last step) how
        much lower its value is (0.6: 60 % fewer steps a second), for a phase or scope how much longer."""
        if self.kind == "steps":
            return 1 - self.value / self.median if self.median else 0.0
        return self.ratio - 1

    @property
    def clear(self) -> bool:
        """Slower than the median rank by ``STRAGGLER_TOLERANCE`` or more: not the noise between ranks
        doing the same work."""
        return self.slower_by >= STRAGGLER_TOLERANCE

    @property
    def costly(self) -> bool:
        """Clear, and losing ``STRAGGLER_TOLERANCE`` of its run by it (when that is known): worth a
        recommendation."""
        return self.clear and (self.share is None or self.share >= STRAGGLER_TOLERANCE)


def straggler(by: str, kind: str, values: Mapping[int, float], slower_is_higher: bool) -> Straggler | None:
    """The slowest of ``values`` (rank -> value) against the median rank; ``None`` with fewer than two
    ranks or when no rank is slower than the median one."""
    finite = {rank: v for rank, v in values.items() if math.isfinite(v)}
    if len(finite) < 2:
        return None
    ordered = sorted(finite.items(), key=lambda item: (-item[1] if slower_is_higher else item[1], item[0]))
    (slow_rank, slow), (median_rank, median) = ordered[0], ordered[len(ordered) // 2]
    if slow == median:
        return None
    return Straggler(by, kind, slow_rank, slow, median_rank, median)


def rank_slow_table(timed_by_rank: Mapping[int, Iterable[Timed]]) -> list[dict[str, Any]]:
    """Per scope/phase name and rank: count, total, p50, p95, max; names by their total over all ranks,
    slowest first, then by rank."""
    by_name: dict[tuple[str, str], dict[int, list[float]]] = {}
    for rank, timed in timed_by_rank.items():
        for item in timed:
            by_name.setdefault((item.kind, item.name), {}).setdefault(rank, []).append(item.duration_s)
    totals = {key: sum(map(sum, ranks.values())) for key, ranks in by_name.items()}
    rows = []
    for key in sorted(by_name, key=lambda k: -totals[k]):
        for rank, durations in sorted(by_name[key].items()):
            rows.append({**_row(*key, durations), "rank": rank})
    return rows


def phase_stragglers(rows: list[dict[str, Any]],
                     durations: Mapping[int, float] | None = None) -> list[Straggler]:
    """For every name two ranks or more timed (rows of ``rank_slow_table``): the rank with the highest p50
    against the median rank's p50, in the order of the rows, with the time it lost there (and its share of
    the rank's run, given ``durations``: rank -> seconds)."""
    by_name: dict[tuple[str, str], dict[int, float]] = {}
    counts: dict[tuple[str, str, int], int] = {}
    for row in rows:
        by_name.setdefault((row["kind"], row["name"]), {})[row["rank"]] = row["p50_s"]
        counts[(row["kind"], row["name"], row["rank"])] = row["count"]
    found = []
    for (kind, name), values in by_name.items():
        item = straggler(name, kind, values, slower_is_higher=True)
        if item is not None:
            lost = (item.value - item.median) * counts[(kind, name, item.rank)]
            duration = (durations or {}).get(item.rank)
            found.append(replace(item, lost_s=lost, share=lost / duration if duration else None))
    return found
