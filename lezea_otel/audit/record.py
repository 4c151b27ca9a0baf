"""The one record every tracker call becomes, before any sink sees it."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""How a line holds the floats JSON cannot: as these texts, at the places its ``"nonfinite"`` list names."""


class Kind(StrEnum):
    """Every record kind, written once: what the trainer writes (``record.kind``), what the run state,
    the readers and the exporter dispatch on. A ``StrEnum``: in the audit and in summaries it is its text."""

    EXPERIMENT_START = "experiment_start"
    ENVIRONMENT = "environment"
    CONFIG = "config"
    EXPERIMENT_END = "experiment_end"
    SCOPE_START = "scope_start"
    SCOPE_END = "scope_end"
    PHASE = "phase"
    TRAINING_STEP = "training_step"
    MODIFICATION_TREE = "modification_tree"
    MODIFICATION_TREE_STATS = "modification_tree_stats"
    MODIFICATION_STATS = "modification_stats"
    DATA_SPLITS = "data_splits"
    DATA_USAGE = "data_usage"
    DATA_SCORE = "data_score"
    DELTA_LOSS = "delta_loss"
    RESOURCE = "resource"
    RESOURCE_TOTALS = "resource_totals"
    CHECKPOINT = "checkpoint"
    DATASET_VERSION = "dataset_version"
    RESULTS = "results"
    REWARD = "reward"
    RESOURCE_COST = "resource_cost"
    BUSINESS_METRICS = "business_metrics"
    COMMENT = "comment"
    CONCLUSION = "conclusion"
    METRIC_DEFINITION = "metric_definition"
    TORCH_MEMORY = "torch_memory"


class Record:
    """One tracker call: what the audit writes and the run state consumes.

    ``scope`` is the scope path (``("builder:42", "tasker:A")``); ``values`` holds a call's
    training numbers under their unprefixed keys, so the hot path builds no second dict.
    """

    __slots__ = ("data", "kind", "parent_span_id", "scope", "span_id", "step", "time_ns", "trace_id",
                 "values")

    def __init__(
        self,
        kind: str,
        time_ns: int,
        step: int | None,
        scope: tuple[str, ...],
        trace_id: int,
        span_id: int,
        data: dict[str, Any],
        values: dict[str, float] | None = None,
        parent_span_id: int = 0,
    ) -> None:
        self.kind = kind
        self.time_ns = time_ns
        self.step = step
        self.scope = scope
        self.trace_id = trace_id
        self.span_id = span_id
        self.data = data
        self.values = values
        self.parent_span_id = parent_span_id
        """For a span's own record (``scope_start``, ``phase``, a worker's ``experiment_start``): its
        parent."""

    @property
    def scope_path(self) -> str:
        return "/".join(self.scope)

    def scoped(self, key: str) -> str:
        """The spec's scope-prefixed key: ``builder:42/loss``."""
        return "/".join((*self.scope, key)) if self.scope else key
