"""The run as the tracker saw it: small aggregates built from records, for summaries.

Memory stays O(keys), not O(steps): per-step history is in the audit, and
``get_experiment_data()`` reads it back from there.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from .record import Record

LOWER_IS_BETTER = ("loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "nll", "regret", "wer", "cer")
RECENT = 50


def metric_name(record: Record, key: str, split: str | None) -> str:
    """The name a training value has in summaries and history: ``<scope>/<split>/<key>``."""
    return record.scoped(f"{split}/{key}" if split else key)


def lower_is_better(key: str) -> bool:
    leaf = key.rsplit("/", 1)[-1].lower()
    return any(word in leaf for word in LOWER_IS_BETTER)


class MetricStats:
    """Running statistics of one metric key; ``add`` is on the hot path, so it stays branch-light."""

    __slots__ = ("count", "last", "last_step", "best", "best_step", "minimum", "maximum", "total",
                 "first", "nonfinite", "first_nonfinite_step", "recent", "lower_better")

    def __init__(self, key: str) -> None:
        self.lower_better = lower_is_better(key)
        self.count = 0
        self.last = math.nan
        self.last_step: int | None = None
        self.best = math.inf if self.lower_better else -math.inf
        self.best_step: int | None = None
        self.minimum, self.maximum = math.inf, -math.inf
        self.total = 0.0
        self.first: float | None = None
        self.nonfinite = 0
        self.first_nonfinite_step: int | None = None
        self.recent: deque[float] = deque(maxlen=RECENT)

    def add(self, value: float, step: int | None) -> None:
        self.count += 1
        self.last = value
        self.last_step = step
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
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        if (value < self.best) if self.lower_better else (value > self.best):
            self.best = value
            self.best_step = step

    def as_dict(self) -> dict[str, Any]:
        finite = self.count - self.nonfinite
        return {
            "count": self.count, "last": self.last, "last_step": self.last_step, "best": _n(self.best),
            "best_step": self.best_step, "min": _n(self.minimum), "max": _n(self.maximum),
            "mean": self.total / finite if finite else None, "first": self.first,
            "nonfinite": self.nonfinite, "first_nonfinite_step": self.first_nonfinite_step,
            "goal": "min" if self.lower_better else "max",
        }


def _n(value: float) -> float | None:
    return value if math.isfinite(value) else None


class RunState:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.metrics: dict[str, MetricStats] = {}
        self._metrics_by_scope: dict[tuple[tuple[str, ...], str | None], dict[str, MetricStats]] = {}
        self.steps = 0
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.last_values: dict[tuple[tuple[str, ...], str | None, str], float] = {}
        self.config: dict[str, Any] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.datasets: list[dict[str, Any]] = []
        self.rewards: dict[str, MetricStats] = {}
        self.results: dict[str, Any] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.cost: dict[str, float] = {}
        self.business: dict[str, float] = {}
        self.comments: list[str] = []
        self.conclusion: str | None = None
        self.scopes: dict[str, dict[str, Any]] = {}
        self.phases: dict[str, dict[str, Any]] = {}
        self.data: dict[str, Any] = {"splits": {}, "samples_used": 0, "scores": 0}
        self.status = "created"
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.error: str | None = None
        self.observed: dict[str, Any] = {}
        self._handlers = {name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_on_")}

    def apply(self, record: Record) -> None:
        kind = record.kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(record)

    def _on_training_step(self, record: Record) -> None:
        self.steps += 1
        step = record.step
        if step is not None:
            if self.first_step is None:
                self.first_step = step
            if self.last_step is None or step > self.last_step:
                self.last_step = step
        split = record.data.get("data_split")
        by_key = self._metrics_by_scope.get((record.scope, split))
        if by_key is None:
            by_key = self._metrics_by_scope[(record.scope, split)] = {}
        for key, value in (record.values or {}).items():
            stats = by_key.get(key)
            if stats is None:
                name = metric_name(record, key, split)
                stats = by_key[key] = self.metrics.setdefault(name, MetricStats(name))
            stats.add(value, step)

    def _on_experiment_start(self, record: Record) -> None:
        self.status, self.start_ns = "running", record.time_ns

    def _on_experiment_end(self, record: Record) -> None:
        self.status, self.end_ns = record.data["status"], record.time_ns
        self.error = record.data.get("error")

    def _on_config(self, record: Record) -> None:
        self.config = dict(record.data)

    def _on_checkpoint(self, record: Record) -> None:
        self.checkpoints.append({"step": record.step, **record.data})

    def _on_dataset_version(self, record: Record) -> None:
        self.datasets.append(dict(record.data))

    def _on_reward(self, record: Record) -> None:
        key = f"{record.data['role']}:{record.data['agent_id']}"
        stats = self.rewards.get(key)
        if stats is None:
            stats = self.rewards[key] = MetricStats("reward")
        stats.add(record.data["reward"], record.step)

    def _on_results(self, record: Record) -> None:
        self.results.update(record.data.get("result_dict") or {})
        for role in ("tasker", "builder"):
            for agent, reward in (record.data.get(f"{role}_rewards") or {}).items():
                self._on_reward(Record("reward", record.time_ns, record.step, record.scope, 0, 0,
                                       {"role": role, "agent_id": agent, "reward": reward}))

    def _on_resource(self, record: Record) -> None:
        data = record.data
        entry = self.resources.setdefault(data["component_id"], {
            "component_type": data.get("component_type"), "samples": 0, "cpu_percent_sum": 0.0,
            "cpu_percent_max": 0.0, "gpu_percent_sum": 0.0, "gpu_samples": 0, "gpu_percent_max": 0.0,
            "memory_mb_max": 0.0, "io_operations": 0.0,
        })
        entry["samples"] += 1
        if data.get("cpu_percent") is not None:
            entry["cpu_percent_sum"] += data["cpu_percent"]
            entry["cpu_percent_max"] = max(entry["cpu_percent_max"], data["cpu_percent"])
        if data.get("gpu_percent") is not None:
            entry["gpu_percent_sum"] += data["gpu_percent"]
            entry["gpu_samples"] += 1
            entry["gpu_percent_max"] = max(entry["gpu_percent_max"], data["gpu_percent"])
        if data.get("memory_mb") is not None:
            entry["memory_mb_max"] = max(entry["memory_mb_max"], data["memory_mb"])
        if data.get("io_operations") is not None:
            entry["io_operations"] += data["io_operations"]

    def _on_resource_cost(self, record: Record) -> None:
        for key, value in record.data.items():
            if isinstance(value, float):
                self.cost[key] = self.cost.get(key, 0.0) + value

    def _on_business_metrics(self, record: Record) -> None:
        self.business.update(record.data.get("metrics", {}))
        cost = record.data.get("metrics", {}).get("resource_cost_eur")
        if isinstance(cost, float):
            self.cost["cost_eur_reported"] = cost

    def _on_comment(self, record: Record) -> None:
        self.comments.append(record.data["text"])

    def _on_conclusion(self, record: Record) -> None:
        self.conclusion = record.data["text"]

    def _timed(self, table: dict[str, dict[str, Any]], name: str, record: Record) -> None:
        entry = table.setdefault(name, {"count": 0, "total_s": 0.0, "max_s": 0.0, "errors": 0})
        duration = record.data.get("duration_s") or 0.0
        entry["count"] += 1
        entry["total_s"] += duration
        entry["max_s"] = max(entry["max_s"], duration)
        entry["errors"] += 1 if record.data.get("error") else 0
        for key, value in (record.data.get("resources") or {}).items():
            short = key.rsplit("lezea.resource.", 1)[-1]
            if short.endswith("peak"):
                entry[short] = max(entry.get(short, 0.0), value)
            elif short.endswith("mean"):
                entry[short + "_last"] = value
            else:
                entry[short] = entry.get(short, 0.0) + value

    def _on_scope_end(self, record: Record) -> None:
        self._timed(self.scopes, record.scope_path, record)

    def _on_phase(self, record: Record) -> None:
        self._timed(self.phases, record.data["name"], record)

    def _on_resource_totals(self, record: Record) -> None:
        self.observed = dict(record.data.get("observed") or {})

    def _on_data_splits(self, record: Record) -> None:
        for split, entry in record.data.items():
            self.data["splits"][split] = entry["count"]

    def _on_data_usage(self, record: Record) -> None:
        self.data["samples_used"] += record.data["count"]

    def _on_data_score(self, record: Record) -> None:
        self.data["scores"] += 1

    def total_cost_eur(self) -> float:
        """Costs logged piecewise (log_resource_cost) or as a running total (log_business_metrics)."""
        return max(self.cost.get("cost_eur", 0.0), self.cost.get("cost_eur_reported", 0.0))

    def resource_totals(self) -> dict[str, Any]:
        out = {}
        for component, entry in self.resources.items():
            samples = entry["samples"] or 1
            out[component] = {
                "component_type": entry["component_type"], "samples": entry["samples"],
                "cpu_percent_mean": entry["cpu_percent_sum"] / samples, "cpu_percent_max": entry["cpu_percent_max"],
                "gpu_percent_mean": entry["gpu_percent_sum"] / entry["gpu_samples"] if entry["gpu_samples"] else None,
                "gpu_percent_max": entry["gpu_percent_max"] if entry["gpu_samples"] else None,
                "memory_mb_peak": entry["memory_mb_max"], "io_operations_total": entry["io_operations"],
            }
        return out

    def summary(self, now_ns: int) -> dict[str, Any]:
        end = self.end_ns or now_ns
        return {
            "status": self.status,
            "error": self.error,
            "duration_s": (end - self.start_ns) / 1e9 if self.start_ns else 0.0,
            "steps": {"count": self.steps, "first": self.first_step, "last": self.last_step},
            "metrics": {key: stats.as_dict() for key, stats in self.metrics.items()},
            "config": self.config,
            "checkpoints": list(self.checkpoints),
            "datasets": list(self.datasets),
            "rewards": {key: stats.as_dict() for key, stats in self.rewards.items()},
            "results": dict(self.results),
            "resources": self.resource_totals(),
            "observed": dict(self.observed),
            "cost": dict(self.cost),
            "business": dict(self.business),
            "data": {**self.data, "splits": dict(self.data["splits"])},
            "scopes": {key: dict(value) for key, value in self.scopes.items()},
            "phases": {key: dict(value) for key, value in self.phases.items()},
            "comments": list(self.comments),
            "conclusion": self.conclusion,
            "calls": dict(self.counts),
        }


def closing_line(name: str, status: str, duration: float, state: RunState, warnings: int, spool: Any,
                 audit_path: Any) -> str:
    """The one compact console line printed at finalize."""
    parts = [f"experiment {name!r} {status} in {duration:.1f} s", f"{state.steps} steps"]
    for key, stats in state.metrics.items():
        if key.endswith("loss"):
            parts.append(f"{key} {stats.last:.4g} (best {stats.best:.4g})")
            break
    if warnings:
        parts.append(f"{warnings} warnings")
    if spool is not None:
        parts.append("delivered " + ", ".join(
            f"{signal} {c['exported']}/{c['produced']}" + (f" ({c['spooled']} spooled)" if c["spooled"] else "")
            + (f" ({c['retried']} after retry)" if c["retried"] else "")
            for signal, c in spool.report().items()))
    parts.append(f"audit {audit_path}")
    return ", ".join(parts)
