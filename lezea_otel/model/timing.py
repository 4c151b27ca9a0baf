"""How long scopes and phases took: per name for one run, per name and rank for a distributed one, and
the straggler (the slowest rank) compared with the median rank."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lezea_otel.model.runs import Timed


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

    @property
    def ratio(self) -> float:
        """How many times the median rank's value the straggler's is (``inf`` when the median's is 0)."""
        return self.value / self.median if self.median else math.inf


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


def phase_stragglers(rows: list[dict[str, Any]]) -> list[Straggler]:
    """For every name two ranks or more timed (rows of ``rank_slow_table``): the rank with the highest p50
    against the median rank's p50, in the order of the rows."""
    by_name: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        by_name.setdefault((row["kind"], row["name"]), {})[row["rank"]] = row["p50_s"]
    found = (straggler(name, kind, values, slower_is_higher=True) for (kind, name), values in by_name.items())
    return [item for item in found if item is not None]
