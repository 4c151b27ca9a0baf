"""One metric's running statistics, which way is better for it, and the run's headline metric.

Goals (``"min"``/``"max"``) are what ``best`` means. A key gets one from ``tracker.define_metric`` (as in
W&B), or from its name only when the name says so unambiguously: the last word of its last ``/`` segment
(words split at ``_``, ``-``, ``.`` and spaces; trailing ``train``/``val``/``test``/``avg``/``mean``/``topN``
qualifiers skipped) is one of :data:`MIN_WORDS` or :data:`MAX_WORDS`, and no word of it is one of
:data:`NOT_A_SCORE` (``delta_loss`` is a change, ``loss_scale`` a knob). Every other key (a learning rate,
a gradient norm) has no goal and no best: nothing is invented.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

MIN_WORDS = frozenset({"loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "nll", "regret",
                       "wer", "cer"})
MAX_WORDS = frozenset({"accuracy", "acc", "reward", "f1", "precision", "recall", "auc", "auroc", "bleu",
                       "iou", "miou"})
NOT_A_SCORE = frozenset({"delta", "scale", "grad", "std", "var", "weight", "lr"})
QUALIFIERS = frozenset({"train", "training", "val", "valid", "validation", "test", "eval", "avg", "mean",
                        "epoch", "step", "batch", "total", "ema"})
GOALS = {"min": "min", "max": "max", "minimize": "min", "maximize": "max"}
"""What ``define_metric(goal=...)`` takes (W&B's ``minimize``/``maximize`` too), and what it means."""
SUMMARIES = ("last", "best", "min", "max", "mean")
"""What ``define_metric(summary=...)`` takes: which figure is the key's summary value."""
EVAL_SPLITS = frozenset({"val", "valid", "validation", "test", "eval"})
RECENT = 50
_WORD = re.compile(r"[_\-. ]+")
_TOP = re.compile(r"top\d+|\d+")


def goal_of(key: str) -> str | None:
    """The goal a key's name states (see the module docstring), ``None`` when it states none."""
    words = [w for w in _WORD.split(key.rsplit("/", 1)[-1].lower()) if w]
    if any(w in NOT_A_SCORE for w in words):
        return None
    while words and (words[-1] in QUALIFIERS or _TOP.fullmatch(words[-1])):
        words.pop()
    if not words:
        return None
    return "min" if words[-1] in MIN_WORDS else "max" if words[-1] in MAX_WORDS else None


def matches(pattern: str, name: str, key: str) -> bool:
    """Whether a ``define_metric`` key names this metric: its logged key (every scope and split), its full
    summary name (``builder:3/val/loss``), or either by a ``*`` glob."""
    if "*" in pattern:
        return fnmatchcase(name, pattern) or fnmatchcase(key, pattern)
    return pattern in (name, key)


class MetricStats:
    """Running statistics of one metric key; ``add`` is on the hot path, so it stays branch-light. The
    minimum and maximum are kept with their steps, so a goal declared late still finds its best."""

    __slots__ = ("count", "first", "first_nonfinite_step", "goal", "key", "last", "last_seq", "last_step",
                 "max_step", "maximum", "min_step", "minimum", "name", "nonfinite", "recent", "split",
                 "summary", "total")

    def __init__(self, name: str, key: str | None = None, split: str | None = None) -> None:
        self.name, self.key, self.split = name, key if key is not None else name, split
        self.goal = goal_of(self.key)
        self.summary: str | None = None
        self.count = 0
        self.last = math.nan
        self.last_step: int | None = None
        self.last_seq = 0
        self.minimum, self.maximum = math.inf, -math.inf
        self.min_step: int | None = None
        self.max_step: int | None = None
        self.total = 0.0
        self.first: float | None = None
        self.nonfinite = 0
        self.first_nonfinite_step: int | None = None
        self.recent: deque[float] = deque(maxlen=RECENT)

    def add(self, value: float, step: int | None, seq: int = 0) -> None:
        self.count += 1
        self.last = value
        self.last_step = step
        self.last_seq = seq
        if value - value != 0:  # NaN or infinite
            self.nonfinite += 1
            if self.first_nonfinite_step is None:
                self.first_nonfinite_step = step
            return
        if self.first is None:
            self.first = value
        self.recent.append(value)
        self.total += value
        if value < self.minimum:
            self.minimum, self.min_step = value, step
        if value > self.maximum:
            self.maximum, self.max_step = value, step

    @property
    def lower_better(self) -> bool:
        return self.goal == "min"

    @property
    def best(self) -> float:
        """The best finite value by the goal; NaN with no goal (or no finite value yet)."""
        value = self.minimum if self.goal == "min" else self.maximum if self.goal == "max" else math.nan
        return value if math.isfinite(value) else math.nan

    @property
    def best_step(self) -> int | None:
        return self.min_step if self.goal == "min" else self.max_step if self.goal == "max" else None

    def declare(self, definitions: Mapping[str, Mapping[str, Any]]) -> None:
        """Apply the ``define_metric`` declarations that name this metric (later ones win)."""
        for pattern, definition in definitions.items():
            if matches(pattern, self.name, self.key):
                if definition.get("goal") is not None:
                    self.goal = definition["goal"]
                if definition.get("summary") is not None:
                    self.summary = definition["summary"]

    def as_dict(self) -> dict[str, Any]:
        finite = self.count - self.nonfinite
        out: dict[str, Any] = {
            "count": self.count, "last": self.last, "last_step": self.last_step, "best": _n(self.best),
            "best_step": self.best_step, "min": _n(self.minimum), "max": _n(self.maximum),
            "mean": self.total / finite if finite else None, "first": self.first,
            "nonfinite": self.nonfinite, "first_nonfinite_step": self.first_nonfinite_step,
            "goal": self.goal,
        }
        if self.summary is not None:
            out["summary"] = {"of": self.summary, "value": out[self.summary]}
        return out


def _n(value: float) -> float | None:
    return value if math.isfinite(value) else None


def headline(metrics: Mapping[str, MetricStats], declared: Iterable[str]) -> MetricStats | None:
    """The metric a run is summed up by (closing line, ``lezea-otel runs``, the report's header): of the
    metrics the first ``define_metric`` key with a goal or a summary names, else of the training losses
    (key ``loss``, or ending in ``/loss``, logged with no split or ``"train"``), the one logged last, so
    that a run with a scope per epoch shows its latest epoch's loss, not its first's."""
    for pattern in declared:
        named = [s for s in metrics.values() if matches(pattern, s.name, s.key)]
        if named:
            return max(named, key=lambda s: s.last_seq)
    losses = [s for s in metrics.values() if s.key.rsplit("/", 1)[-1] == "loss"
              and (s.split or "train") == "train" and not EVAL_SPLITS & set(s.key.split("/"))]
    return max(losses, key=lambda s: s.last_seq) if losses else None
