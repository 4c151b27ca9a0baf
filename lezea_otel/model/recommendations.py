"""Advice drawn from what this run recorded (``recommend``: ``get_recommendations()`` and the CLI alike);
every item cites the evidence it rests on. What the ranks of a distributed run show side by side is
``analysis.rank_advice``."""

from __future__ import annotations

import math
from typing import Any

from lezea_otel.model.metric_stats import EVAL_SPLITS
from lezea_otel.model.run_state import MetricStats, RunState

PLATEAU_MIN_POINTS = 20
PLATEAU_REL_CHANGE = 0.01
RISING_POINTS = 5
"""Values in a row over twice a loss's best before it counts as rising (the LezeaLossDiverging alert's
rule, in values rather than minutes)."""
GPU_IDLE_PERCENT = 30.0
SLOW_PHASE_SHARE = 0.5
DATA_WAIT_SHARE = 0.2
"""The loop waiting for data (``tracker.iterate``) this share of the run or more is worth a recommendation."""
def advice_item(rule: str, severity: str, message: str, **evidence: Any) -> dict[str, Any]:
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
        out.append(advice_item("no_steps", "info",
                               "No training step was logged; metrics and curves will be empty."))
    latest: dict[tuple[str, str | None], MetricStats] = {}  # per key and split, the series logged last
    for _name, stats in sorted(_loss_keys(state), key=lambda item: item[1].last_seq):
        latest[(stats.key, stats.split)] = stats  # an earlier epoch scope's flat loss is history, not now
    for key, stats in _loss_keys(state):
        if stats.nonfinite:
            out.append(advice_item(
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
                out.append(advice_item(
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
            out.append(advice_item(
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
            out.append(advice_item(
                "gpu_idle", "warning",
                f"GPU of {component} was {mean:.0f}% busy on average{wait_text}: the input pipeline or the "
                "CPU side is likely the bottleneck (more DataLoader workers, pinned memory, larger batches).",
                component=component, gpu_percent_mean=mean, data_wait_s=wait_s if waited else None))
    if waited and duration_s > 0 and wait_s > DATA_WAIT_SHARE * duration_s:
        batches = sum(phase["count"] for phase in waited.values())
        out.append(advice_item(
            "data_wait", "warning",
            f"The loop waited {wait_s:.1f} s for its data, {wait_s / duration_s:.0%} of the run's "
            f"{duration_s:.1f} s ({wait_s / max(batches, 1) * 1e3:.3g} ms a batch over {batches} batches): "
            "the input pipeline is the bottleneck (more DataLoader workers, persistent_workers, "
            "pin_memory, a larger prefetch_factor, or a faster dataset).",
            phases=sorted(waited), wait_s=wait_s, share=wait_s / duration_s, batches=batches))
    total_eur = state.total_cost_eur()
    if cost_limit_eur is not None and total_eur > cost_limit_eur:
        out.append(advice_item(
            "cost_over_limit", "critical",
            f"The run cost {total_eur:.2f} EUR, above the limit of {cost_limit_eur:.2f} EUR "
            "(LEZEA_COST_LIMIT_EUR).",
            cost_eur=total_eur, limit_eur=cost_limit_eur))
    for name, phase in state.phases.items():
        if duration_s > 0 and phase["total_s"] > SLOW_PHASE_SHARE * duration_s and phase["count"] > 0:
            out.append(advice_item(
                "slow_phase", "info",
                f"Phase {name!r} took {phase['total_s']:.1f} s of the run's {duration_s:.1f} s "
                f"({phase['total_s'] / duration_s:.0%}); it is where speed-ups pay most.",
                phase=name, total_s=phase["total_s"], share=phase["total_s"] / duration_s))
    for path, scope in {**state.scopes, **state.phases}.items():
        if scope["errors"]:
            out.append(advice_item(
                "scope_errors", "warning",
                f"{path} raised an exception {scope['errors']} time(s); see the span status in the trace.",
                scope=path, errors=scope["errors"]))
    return out
