"""The run as the tracker saw it: small aggregates built from records, for summaries.

Memory stays O(keys), not O(steps): per-step history is in the audit, and
``get_experiment_data()`` reads it back from there. The keys are bounded by the same caps as
``/metrics``: metric keys past ``LEZEA_MAX_METRIC_NAMES``, scope/split combinations past 1000 per
key, and scopes, phases, agents and components past 1000 are folded into one ``(other)`` entry
per table, counted in ``summary["folded"]`` and warned about once; the audit still has them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lezea_otel import semconv as names
from lezea_otel.audit.record import Kind, Record
from lezea_otel.model.metric_stats import SUMMARIES, headline
from lezea_otel.model.metric_stats import MetricStats as MetricStats

MAX_METRIC_NAMES = 256  # the default of LEZEA_MAX_METRIC_NAMES (settings.py), as /metrics caps keys
MAX_ENTRIES = 1000  # as MAX_SERIES_PER_NAME in metrics.py: per key, and scopes, phases, agents, components
OTHER = "(other)"
"""The entry of each summary table that holds everything past its cap."""
T = TypeVar("T")

FOLDED = ("metrics", "scopes", "phases", "rewards", "resources")
Warn = Callable[[str, str, str], None]


def metric_name(record: Record, key: str, split: str | None) -> str:
    """The name a training value has in summaries and history: ``<scope>/<split>/<key>``."""
    return record.scoped(f"{split}/{key}" if split else key)


def add_resources(entry: dict[str, Any], resources: dict[str, Any]) -> None:
    """A scope's or phase's measured resources (``lezea.resource.*``) into its summary entry: peaks are
    maxima, means keep the last, flags count, the rest adds up. The run state and the exporter's
    per-scope summaries fold them the same way."""
    for key, value in resources.items():
        short = key.rsplit(names.SCOPE_RESOURCE_PREFIX, 1)[-1]
        if isinstance(value, bool):
            entry[short] = entry.get(short, 0) + int(value)
        elif isinstance(value, str):  # how it was measured (``memory.method``); ``mixed`` when it varied
            entry[short] = value if entry.get(short, value) == value else "mixed"
        elif short.endswith("peak"):
            entry[short] = max(entry.get(short, 0.0), value)
        elif short.endswith("mean"):
            entry[short + "_last"] = value
        else:
            entry[short] = entry.get(short, 0.0) + value


class RunState:
    """``warn`` (the tracker's one-warning-per-problem reporter) hears of the first fold per table;
    rebuilt from an audit (the CLI) a run folds silently, with the same counts.

    ``steps`` counts training steps: ``log_training_step`` calls with no ``data_split`` or ``"train"``;
    a validation or test call is a value, not a step (``split_steps`` counts the calls per split)."""

    def __init__(self, max_metric_names: int = MAX_METRIC_NAMES, warn: Warn | None = None,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.counts: dict[str, int] = {}
        self.metrics: dict[str, MetricStats] = {}
        self.max_metric_names = max(1, max_metric_names)
        self.max_entries = max(1, max_entries)
        self.folded = dict.fromkeys(FOLDED, 0)  # values or records folded into (other), per table
        self._warn = warn
        self._series: dict[str, int] = {}  # admitted metric key -> its scope/split combinations
        self._metrics_by_scope: dict[tuple[tuple[str, ...], str | None], dict[str, MetricStats]] = {}
        self.steps = 0
        self.split_steps: dict[str, int] = {}
        self.definitions: dict[str, dict[str, Any]] = {}
        """``define_metric`` declarations by key, in the order first declared (the first names the
        headline)."""
        self._seq = 0
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
        self.workers = {"count": 0, "steps": 0}
        """Forked workers whose records were folded in, and their step records (values, not steps)."""
        self._handlers = {name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_on_")}

    def apply(self, record: Record) -> None:
        kind = record.kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(record)

    def _on_training_step(self, record: Record) -> None:
        step, split = record.step, record.data.get("data_split")
        named = split or "train"
        self.split_steps[named] = self.split_steps.get(named, 0) + 1
        if named == "train":
            self.steps += 1
            if step is not None:
                if self.first_step is None:
                    self.first_step = step
                if self.last_step is None or step > self.last_step:
                    self.last_step = step
        self._seq += 1
        seq = self._seq
        by_key = self._metrics_by_scope.get((record.scope, split))
        if by_key is None:
            by_key = {}  # past the cap a combination is looked up by name on every step (the slow path)
            if len(self._metrics_by_scope) < self.max_entries:
                self._metrics_by_scope[(record.scope, split)] = by_key
        for key, value in (record.values or {}).items():
            stats = by_key.get(key)
            if stats is None:
                stats = self._metric(record, key, split, by_key)
            stats.add(value, step, seq)

    def _metric(self, record: Record, key: str, split: str | None,
                by_key: dict[str, MetricStats]) -> MetricStats:
        """The statistics of a key in one scope/split, admitting it while the caps allow; past them the
        value goes to the ``(other)`` entry and nothing about the key is kept."""
        series = self._series.get(key)
        if series is None and len(self._series) >= self.max_metric_names:  # the exporter folds it too
            if self._warn is not None and not self.folded["metrics"]:
                self._warn("log_training_step", f"more than {self.max_metric_names} training keys "
                           "(LEZEA_MAX_METRIC_NAMES)", f"{key[:80]!r} and later new keys are folded into the "
                           f"summary's {OTHER!r} entry and the {names.TRAINING_OVERFLOW} gauge; the audit "
                           "keeps every value")
            return self._other(self.metrics, "metrics", "", key, lambda: MetricStats(OTHER))
        name = metric_name(record, key, split)
        stats = self.metrics.get(name)
        if stats is None:
            if series is not None and series >= self.max_entries:
                return self._other(self.metrics, "metrics", "", name, lambda: MetricStats(OTHER))
            self._series[key] = (series or 0) + 1
            stats = self.metrics[name] = MetricStats(name, key, split)
            if self.definitions:
                stats.declare(self.definitions)
        by_key[key] = stats
        return stats

    def _other(self, table: dict[str, T], kind: str, call: str, first: str, make: Callable[[], T]) -> T:
        """The ``(other)`` entry of ``table``; the first fold of each table warns, naming the call
        (``call`` empty: another part already warns about the same cap)."""
        self.folded[kind] += 1
        entry = table.get(OTHER)
        if entry is None:
            entry = table[OTHER] = make()
            if self._warn is not None and call:
                shown = first if len(first) <= 80 else first[:77] + "..."
                self._warn(call, f"more than {self.max_entries} distinct {kind} in the summary",
                           f"{shown!r} and later ones are folded into its {OTHER!r} entry, counted in "
                           "summary['folded']; the audit keeps every record")
        return entry

    def _entry(self, table: dict[str, T], kind: str, call: str, key: str, make: Callable[[], T]) -> T:
        entry = table.get(key)
        if entry is None:
            if len(table) >= self.max_entries:
                return self._other(table, kind, call, key, make)
            entry = table[key] = make()
        return entry

    def _on_experiment_start(self, record: Record) -> None:
        self.status, self.start_ns = "running", record.time_ns
        cap = record.data.get("max_metric_names")  # the run's LEZEA_MAX_METRIC_NAMES: the CLI folds as it did
        if type(cap) is int and cap > 0:
            self.max_metric_names = cap

    def _on_experiment_end(self, record: Record) -> None:
        self.status, self.end_ns = record.data["status"], record.time_ns
        self.error = record.data.get("error")

    def _on_metric_definition(self, record: Record) -> None:
        """``define_metric``: the key's goal and summary from now on, and for what it already has."""
        data = record.data
        key = data.get("key")
        if not isinstance(key, str) or not key:
            return
        definition = self.definitions.setdefault(key, {"goal": None, "summary": None})
        for field, allowed in (("goal", ("min", "max")), ("summary", SUMMARIES)):
            if data.get(field) in allowed:
                definition[field] = data[field]
        for stats in self.metrics.values():
            stats.declare({key: definition})

    def headline(self) -> MetricStats | None:
        """The metric the run is summed up by (``metric_stats.headline``)."""
        declared = [k for k, d in self.definitions.items()
                    if d["goal"] is not None or d["summary"] is not None]
        return headline(self.metrics, declared)

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
            stats = self._entry(self.rewards, "rewards", "log_reward", key, lambda: MetricStats("reward"))
        stats.add(record.data["reward"], record.step)

    def _on_results(self, record: Record) -> None:
        self.results.update(record.data.get("result_dict") or {})
        for role in ("tasker", "builder"):
            for agent, reward in (record.data.get(f"{role}_rewards") or {}).items():
                self._on_reward(Record(Kind.REWARD, record.time_ns, record.step, record.scope, 0, 0,
                                       {"role": role, "agent_id": agent, "reward": reward}))

    def _on_resource(self, record: Record) -> None:
        data = record.data
        entry = self._entry(self.resources, "resources", "log_resource", data["component_id"], lambda: {
            "component_type": data.get("component_type"), "samples": 0, "cpu_percent_sum": 0.0,
            "cpu_samples": 0, "cpu_percent_max": 0.0, "gpu_percent_sum": 0.0, "gpu_samples": 0,
            "gpu_percent_max": 0.0, "memory_mb_max": None, "io_operations": None,
        })
        entry["samples"] += 1
        if data.get("cpu_percent") is not None:
            entry["cpu_percent_sum"] += data["cpu_percent"]
            entry["cpu_samples"] += 1
            entry["cpu_percent_max"] = max(entry["cpu_percent_max"], data["cpu_percent"])
        if data.get("gpu_percent") is not None:
            entry["gpu_percent_sum"] += data["gpu_percent"]
            entry["gpu_samples"] += 1
            entry["gpu_percent_max"] = max(entry["gpu_percent_max"], data["gpu_percent"])
        if data.get("memory_mb") is not None:  # a value never given (or refused) stays None, not 0
            entry["memory_mb_max"] = max(entry["memory_mb_max"] or 0.0, data["memory_mb"])
        if data.get("io_operations") is not None:
            entry["io_operations"] = (entry["io_operations"] or 0.0) + data["io_operations"]

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

    def _timed(self, table: dict[str, dict[str, Any]], kind: str, name: str, record: Record) -> None:
        entry = table.get(name)
        if entry is None:
            call = "span" if kind == "phases" else f"{record.data.get('level')}_scope"
            entry = self._entry(table, kind, call, name,
                                lambda: {"count": 0, "total_s": 0.0, "max_s": 0.0, "errors": 0})
        data = record.data
        duration = data.get("duration_s") or 0.0
        entry["count"] += 1
        entry["total_s"] += duration
        if duration > entry["max_s"]:
            entry["max_s"] = duration
        if data.get("error"):
            entry["errors"] += 1
        resources = data.get("resources")
        if resources:
            add_resources(entry, resources)
        if kind == "phases" and (data.get("attributes") or {}).get(names.PHASE_KIND) == names.DATA_WAIT:
            entry["data_wait"] = True  # tracker.iterate's wait for the next item
        gpu = data.get("gpu_duration_s")
        if isinstance(gpu, (int, float)):
            entry["gpu_total_s"] = entry.get("gpu_total_s", 0.0) + gpu
            entry["gpu_max_s"] = max(entry.get("gpu_max_s", 0.0), gpu)
        elif data.get("gpu_unresolved"):
            entry["gpu_unresolved"] = entry.get("gpu_unresolved", 0) + 1

    def _on_scope_end(self, record: Record) -> None:
        self._timed(self.scopes, "scopes", "/".join(record.scope), record)

    def _on_phase(self, record: Record) -> None:
        self._timed(self.phases, "phases", record.data["name"], record)

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
            cpu = entry["cpu_samples"]
            out[component] = {
                "component_type": entry["component_type"], "samples": entry["samples"],
                "cpu_percent_mean": entry["cpu_percent_sum"] / cpu if cpu else None,
                "cpu_percent_max": entry["cpu_percent_max"] if cpu else None,
                "gpu_percent_mean": (entry["gpu_percent_sum"] / entry["gpu_samples"]
                                     if entry["gpu_samples"] else None),
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
            "steps": {"count": self.steps, "first": self.first_step, "last": self.last_step,
                      "splits": dict(self.split_steps)},
            "headline": headline_entry(self.headline()),
            "workers": dict(self.workers),
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
            "calls": {str(kind): count for kind, count in self.counts.items()},  # plain str: orjson
            "folded": dict(self.folded),
        }


def headline_entry(stats: MetricStats | None) -> dict[str, Any] | None:
    """``summary["headline"]``: the headline metric's name and figures, ``None`` when the run has none."""
    return None if stats is None else {"key": stats.name, **stats.as_dict()}


def closing_line(name: str, status: str, duration: float, state: RunState, warnings: int,
                 delivery: dict[str, Any], audit_path: Any) -> str:
    """The one compact console line printed at finalize; ``delivery``: ``summary["delivery"]``."""
    parts = [f"experiment {name!r} {status} in {duration:.1f} s", f"{state.steps} steps"]
    evals = {split: n for split, n in state.split_steps.items() if split != "train"}
    if evals:
        parts[-1] += " (" + ", ".join(f"{n} {split} calls" for split, n in evals.items()) + ")"
    head = state.headline()
    if head is not None:
        best = head.best
        parts.append(f"{head.name} {head.last:.4g}" + (f" (best {best:.4g})" if best == best else ""))
    if warnings:
        parts.append(f"{warnings} warnings")
    if delivery.get("mode") == "otlp" and delivery.get("signals"):
        parts.append("delivered " + ", ".join(
            f"{signal} {c['exported']}/{c['produced']}" + (f" ({c['left_in_audit']} left in the audit)"
                                                          if c.get("left_in_audit") else "")
            for signal, c in delivery["signals"].items()))
    parts.append(f"audit {audit_path}")
    return ", ".join(parts)


def merge_measured(summary: dict[str, Any], report: dict[str, Any]) -> None:
    """What the exporter measured, into a run summary: the observers' totals where the audit has none
    (an exporter process keeps them), and each scope's or phase's resources."""
    if not summary.get("observed") and isinstance(report.get("observed"), dict):
        summary["observed"] = report["observed"]
    for section, entries in (report.get("scope_resources") or {}).items():
        for name, measured in (entries or {}).items() if isinstance(entries, dict) else ():
            if name in summary.get(section, {}) and isinstance(measured, dict):
                summary[section][name].update(measured)
