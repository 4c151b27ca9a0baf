"""Resource windows cut from points: the observed tree's cumulative counters at known instants.

A scope's resources are the difference of the counters at its end and at its start. The exporter
learns of those instants from records it reads a little later, so it cannot read the counters at
them; it reads them at *points* (each sample, and a point taken as a record is read) and estimates
the counters at any instant between two points by linear interpolation, with a stated bound on the
error (:class:`Estimate`). Pure arithmetic on plain values: no psutil, no NVML, no clock.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

APPROXIMATE_FRACTION = 0.1
"""A window is marked approximate when its boundaries' uncertainty exceeds this share of its duration."""
HISTORY_POINTS = 1024


@dataclass(frozen=True, slots=True)
class Point:
    """The tree's cumulative counters at one wall-clock instant (the clock the records are stamped with)."""

    time_ns: int
    cpu_s: float
    rss: int
    energy: dict[str, float]
    """J since the driver loaded, per GPU whose counter could be read."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """The counters at one instant, interpolated between the points around it.

    With ``l <= t < r`` those points, the interpolated CPU time is off by at most
    ``(t - l)(r - t) / (r - l)`` seconds (``uncertainty_s``) times the CPUs the tree may use, and the
    energy by that times the GPUs' peak power: 0 at a point, at most the distance to the nearer one.
    Outside the points, the nearest one's counters, off by the time between: after the last point (a
    record newer than any reading) or before the first (a scope that began before the observers did:
    what it used until then is not counted, and the uncertainty says how much may be missing).
    """

    cpu_s: float
    energy: dict[str, float]
    rss: int
    """The last point's at or before the instant."""
    uncertainty_s: float


class History:
    """Points in time order. Bounded: when full, the older half keeps every other point, so a long
    window still finds points around its start, coarser the older they are."""

    def __init__(self, limit: int = HISTORY_POINTS) -> None:
        self._points: list[Point] = []
        self._times: list[int] = []
        self._limit = max(4, limit)

    @property
    def latest(self) -> Point | None:
        return self._points[-1] if self._points else None

    def __len__(self) -> int:
        return len(self._points)

    def add(self, point: Point) -> None:
        index = bisect.bisect_right(self._times, point.time_ns)
        self._points.insert(index, point)
        self._times.insert(index, point.time_ns)
        if len(self._points) > self._limit:
            half = len(self._points) // 2
            self._points = self._points[:half:2] + self._points[half:]
            self._times = [p.time_ns for p in self._points]

    def since(self, time_ns: int) -> list[Point]:
        """The points from the last one at or before ``time_ns`` on."""
        return self._points[max(0, bisect.bisect_right(self._times, time_ns) - 1):]

    def peak_rss(self, time_ns: int) -> int:
        """The largest RSS of :meth:`since` ``time_ns`` (0 without points), with no list made."""
        points = self._points
        peak = 0
        for index in range(max(0, bisect.bisect_right(self._times, time_ns) - 1), len(points)):
            rss = points[index].rss
            if rss > peak:
                peak = rss
        return peak

    def estimate(self, time_ns: int) -> Estimate | None:
        """The counters at ``time_ns``; None without any point."""
        found = self.at(time_ns)
        if found is None:
            return None
        cpu_s, energy, rss, uncertainty_s = found
        return Estimate(cpu_s, dict(energy), rss, uncertainty_s)

    def at(self, time_ns: int) -> tuple[float, dict[str, float], int, float] | None:
        """:meth:`estimate` as (cpu_s, energy, rss, uncertainty_s), the energy perhaps a point's own
        mapping (read it, never change it): what a window's summary reads, at every phase."""
        points = self._points
        if not points:
            return None
        index = bisect.bisect_right(self._times, time_ns)
        if index == 0:
            first = points[0]
            return first.cpu_s, first.energy, first.rss, (first.time_ns - time_ns) / 1e9
        left = points[index - 1]
        if index == len(points):
            return left.cpu_s, left.energy, left.rss, max(0, time_ns - left.time_ns) / 1e9
        right = points[index]
        width = right.time_ns - left.time_ns  # > 0: bisect_right put every equal time on the left
        share = (time_ns - left.time_ns) / width
        energy = {uuid: joules + (right.energy[uuid] - joules) * share
                  for uuid, joules in left.energy.items() if uuid in right.energy}
        return (left.cpu_s + (right.cpu_s - left.cpu_s) * share, energy, left.rss,
                (time_ns - left.time_ns) * (right.time_ns - time_ns) / width / 1e9)
