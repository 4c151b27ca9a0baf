"""Advice drawn from what this run recorded; every item cites the evidence it rests on."""

from __future__ import annotations

import math
from typing import Any

from lezea_otel.model.run_state import MetricStats, RunState

PLATEAU_MIN_POINTS = 20
PLATEAU_REL_CHANGE = 0.01
GPU_IDLE_PERCENT = 30.0
SLOW_PHASE_SHARE = 0.5


def _item(rule: str, severity: str, message: str, **evidence: Any) -> dict[str, Any]:
    return {"rule": rule, "severity": severity, "message": message, "evidence": evidence}


def _loss_keys(state: RunState) -> list[tuple[str, MetricStats]]:
    return [(key, stats) for key, stats in state.metrics.items()  # a delta is a rate, not a loss
            if stats.lower_better and not key.rsplit("/", 1)[-1].startswith("delta")]


def recommend(state: RunState, cost_limit_eur: float | None, duration_s: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if state.status in ("running", "finished") and state.steps == 0:
        out.append(_item("no_steps", "info",
                         "No training step was logged; metrics and curves will be empty."))
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
        if len(recent) >= PLATEAU_MIN_POINTS:
            half = len(recent) // 2
            before = sum(recent[:half]) / half
            after = sum(recent[half:]) / (len(recent) - half)
            scale = max(abs(before), 1e-12)
            if abs(before - after) / scale < PLATEAU_REL_CHANGE:
                out.append(_item(
                    "loss_plateau", "warning",
                    f"{key} has plateaued: the mean of its last {len(recent) - half} values ({after:.4g}) "
                    f"is within {PLATEAU_REL_CHANGE:.0%} of the {half} before ({before:.4g}). Consider a "
                    "learning-rate schedule, early stopping, or more capacity.",
                    key=key, before=before, after=after, points=len(recent)))
        if (math.isfinite(stats.best) and math.isfinite(stats.last) and stats.count >= 5
                and stats.last > 2 * stats.best and stats.best > 0):
            out.append(_item(
                "loss_rising", "warning",
                f"{key} is {stats.last:.4g} now, more than twice its best {stats.best:.4g} "
                f"(step {stats.best_step}): training may be diverging or overfitting.",
                key=key, last=stats.last, best=stats.best, best_step=stats.best_step))
    for component, totals in state.resource_totals().items():
        mean = totals.get("gpu_percent_mean")
        if mean is not None and mean < GPU_IDLE_PERCENT:
            out.append(_item(
                "gpu_idle", "warning",
                f"GPU of {component} was {mean:.0f}% busy on average: the input pipeline or the CPU side is "
                "likely the bottleneck (more DataLoader workers, pinned memory, larger batches).",
                component=component, gpu_percent_mean=mean))
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
