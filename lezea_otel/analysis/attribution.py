"""Which training step a phase belongs to: the step that was running, not the one logged last.

A training loop's phases usually run before its step is logged (``data``, ``forward``, ``backward``,
then ``log_training_step``, then perhaps ``optimizer``), so "the step of the previous call" gives every
phase the step before its own, and the first batch's phases none. The audit holds enough to do better,
after the fact and at no cost to the training thread:

1. **Iterations.** Within one scope path (and one process), phases are cut into iterations: an
   iteration begins where the first phase name of the one before comes again (``data`` ... ``data``).
2. **A step logged during the iteration** (between its first phase's start and its last phase's end)
   is its step.
3. **Otherwise the loop logs its step before or after the work**: a loop whose first step call comes
   before its first phase logs first, so an iteration takes the last step logged before it; any other
   takes the first step logged after it (a loop that logs every tenth step gives the nine iterations
   before the call its step). When that direction has none, the other one is used.

Steps are those of the same scope path, or, when that path logged none (phases inside a nested scope,
the step logged by the scope around it), every training step of the process. Only training steps count
(no ``data_split`` or ``"train"``): a validation call is not a step.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    """One phase as the audit holds it: where it ran and when."""

    index: int
    """Its position in the caller's list (what the answer is keyed by)."""
    group: tuple[int | None, str]
    """(forked worker pid or None, scope path): the stream of work it is part of."""
    name: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class StepCall:
    """One training ``log_training_step``: when, in which scope path, which step."""

    time_ns: int
    path: str
    step: int


def attribute(phases: Iterable[PhaseSpan], steps: Sequence[StepCall]) -> dict[int, int]:
    """The step of each phase that has one (see the module docstring), by ``PhaseSpan.index``."""
    by_group: dict[tuple[int | None, str], list[PhaseSpan]] = {}
    for phase in phases:
        by_group.setdefault(phase.group, []).append(phase)
    by_path: dict[str, list[StepCall]] = {}
    for call in sorted(steps, key=lambda c: c.time_ns):
        by_path.setdefault(call.path, []).append(call)
    every = sorted(steps, key=lambda c: c.time_ns)
    found: dict[int, int] = {}
    for (_worker, path), members in by_group.items():
        calls = by_path.get(path) or every
        if calls:
            found.update(_attribute_group(sorted(members, key=lambda p: p.start_ns), calls))
    return found


def _iterations(phases: list[PhaseSpan]) -> list[list[PhaseSpan]]:
    iterations: list[list[PhaseSpan]] = []
    for phase in phases:
        if not iterations or phase.name == iterations[-1][0].name:
            iterations.append([phase])
        else:
            iterations[-1].append(phase)
    return iterations


def _attribute_group(phases: list[PhaseSpan], calls: list[StepCall]) -> dict[int, int]:
    times = [call.time_ns for call in calls]
    logs_first = times[0] < phases[0].start_ns
    iterations = _iterations(phases)
    found: dict[int, int] = {}
    for iteration in iterations:
        start = iteration[0].start_ns
        end = max(phase.end_ns for phase in iteration)
        inside = bisect.bisect_left(times, start)
        if inside < len(times) and times[inside] <= end:
            step: int | None = calls[inside].step
        else:
            before = calls[inside - 1].step if inside > 0 else None
            after_index = bisect.bisect_right(times, end)
            after = calls[after_index].step if after_index < len(times) else None
            step = (before if before is not None else after) if logs_first else \
                (after if after is not None else before)
        if step is not None:
            found.update((phase.index, step) for phase in iteration)
    return found
