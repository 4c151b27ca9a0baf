"""Tracker calls -> metrics and log records: the table of DESIGN.md section 2, as code.

Spans are not made here (they are started on the caller's thread); this module turns the
record of each call into metric values and correlated log records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import names, values
from .logs import LogRecorder
from .metrics import MetricRecorder
from .record import Record
from .safety import encodable_number

_MB = 2**20


def _float(value: Any) -> float:
    """``float()`` that cannot overflow: an int past float's range (a step of 10**400) is +-max float."""
    return float(encodable_number(value))


class SignalMapper:
    def __init__(self, metrics: MetricRecorder, logs: LogRecorder) -> None:
        self._metrics = metrics
        self._logs = logs
        self._component_types: dict[str, str] = {}
        self._cost_totals: dict[str, float] = {}
        self._handlers: dict[str, Callable[[Record], None]] = {
            kind[len("_on_"):]: getattr(self, kind) for kind in dir(self) if kind.startswith("_on_")
        }

    def handle(self, record: Record) -> None:
        handler = self._handlers.get(record.kind)
        if handler is not None:
            handler(record)

    def _event(self, record: Record, event: str, body: str, attributes: dict[str, Any], warning: bool = False) -> None:
        extra: dict[str, Any] = {}
        if record.scope:
            extra[names.SCOPE_PATH] = record.scope_path
        if record.step is not None:
            extra[names.STEP] = record.step
        self._logs.emit(event, body, {**extra, **attributes}, time_ns=record.time_ns,
                        context=record.otel_context(), warning=warning)

    # -- the hot path ---------------------------------------------------------------------------

    def _on_training_step(self, record: Record) -> None:
        if record.step is not None:
            self._metrics.step = _float(record.step)
        self._metrics.step_time_s = record.time_ns / 1e9
        if record.values:
            self._metrics.set_training(record.values, record.scope, record.data.get("data_split"))

    # -- lifecycle ------------------------------------------------------------------------------

    def _on_experiment_start(self, record: Record) -> None:
        self._metrics.set_gauge(names.RUN_STATE, 1.0, {names.RUN_STATUS: "running"})
        self._event(record, names.EVENT_STARTED, f"experiment {record.data['name']!r} started",
                    values.flat_attributes({"lezea.experiment": {"purpose": record.data.get("purpose"),
                                                                  "tags": record.data.get("tags")}}))

    def _on_environment(self, record: Record) -> None:
        self._event(record, names.EVENT_ENVIRONMENT, "environment",
                    values.flat_attributes(record.data, "lezea.environment."))

    def _on_experiment_end(self, record: Record) -> None:
        status = record.data["status"]
        self._metrics.set_gauge(names.RUN_STATE, 0.0, {names.RUN_STATUS: "running"})
        self._metrics.set_gauge(names.RUN_STATE, 1.0, {names.RUN_STATUS: status})
        self._metrics.set_gauge(names.RUN_DURATION, record.data["duration_s"], {}, names.UNIT_SECONDS)
        self._event(record, names.EVENT_FINISHED, f"experiment {status}",
                    values.flat_attributes({names.RUN_STATUS: status, names.RUN_ENDED_BY: record.data["ended_by"],
                                            "lezea.run.duration_s": record.data["duration_s"],
                                            "lezea.summary": record.data.get("summary")}),
                    warning=status != "finished")

    def _on_phase(self, record: Record) -> None:
        self._metrics.record(names.PHASE_DURATION, record.data["duration_s"],
                             {names.PHASE_NAME: record.data["name"]}, context=record.otel_context(),
                             scope=record.scope)

    # -- configuration and training structure ---------------------------------------------------

    def _on_config(self, record: Record) -> None:
        self._event(record, names.EVENT_CONFIG, "LeZeA configuration",
                    values.flat_attributes(record.data, names.CONFIG_PREFIX))

    def _on_modification_tree(self, record: Record) -> None:
        count = len(record.data.get("modifications") or [])
        if count:
            self._metrics.add(names.MODIFICATION_COUNT, count)
        self._stats(record, record.data.get("statistics") or {}, "tree")
        self._event(record, names.EVENT_MODIFICATION_TREE, f"modification tree with {count} modifications",
                    {"lezea.modifications": values.json_text(record.data.get("modifications")),
                     **values.flat_attributes(record.data.get("statistics") or {}, "lezea.statistics.")})

    def _on_modification_tree_stats(self, record: Record) -> None:
        self._stats(record, record.data["statistics"], "tree")

    def _on_modification_stats(self, record: Record) -> None:
        self._stats(record, record.data["statistics"], "modification")

    def _stats(self, record: Record, statistics: dict[str, Any], source: str) -> None:
        for key, value in statistics.items():
            if isinstance(value, float):
                self._metrics.set_gauge(names.MODIFICATION_STAT, value,
                                        {names.STAT_NAME: key, "lezea.stat.source": source}, scope=record.scope)

    def _on_data_splits(self, record: Record) -> None:
        for split, entry in record.data.items():
            self._metrics.set_gauge(names.DATA_SPLIT_SIZE, _float(entry["count"]), {names.SPLIT_NAME: split})
        self._event(record, names.EVENT_DATA_SPLITS, "data splits",
                    {f"lezea.data.{split}.{field}": entry[field]
                     for split, entry in record.data.items() for field in ("count", "sha256")})

    def _on_data_usage(self, record: Record) -> None:
        self._metrics.add(names.DATA_SAMPLES_USED, record.data["count"])
        self._event(record, names.EVENT_DATA_USAGE, f"{record.data['count']} samples used",
                    values.flat_attributes({"lezea.epoch": record.data.get("epoch"),
                                            "lezea.data.count": record.data["count"],
                                            "lezea.data.sha256": record.data["sha256"]}))

    def _on_data_score(self, record: Record) -> None:
        score = record.data.get("score")
        if isinstance(score, float) and score >= 0:  # a histogram takes no negatives (the audit keeps them)
            self._metrics.record(names.DATA_SCORE, score, {}, scope=record.scope)
        self._event(record, names.EVENT_DATA_SCORE, f"sample {record.data['sample_id']} scored",
                    values.flat_attributes({"lezea.data": record.data}))

    def _on_delta_loss(self, record: Record) -> None:
        if record.data.get("epoch") is not None:
            self._metrics.set_gauge(names.EPOCH, _float(record.data["epoch"]), {}, scope=record.scope)
        for key, name in (("loss", names.EPOCH_LOSS), ("delta_loss", names.EPOCH_DELTA_LOSS)):
            if isinstance(record.data.get(key), float):
                self._metrics.set_gauge(name, record.data[key], {}, scope=record.scope)

    # -- resources, artifacts, results, business ------------------------------------------------

    def _on_resource(self, record: Record) -> None:
        data = record.data
        attributes = {names.COMPONENT_ID: data["component_id"]}
        if data.get("component_type"):  # remembered, so log_resource() later joins the same series
            self._component_types[data["component_id"]] = data["component_type"]
        if data["component_id"] in self._component_types:
            attributes[names.COMPONENT_TYPE] = self._component_types[data["component_id"]]
        for field, name, scale, unit in (
            ("cpu_percent", names.COMPONENT_CPU, 0.01, names.UNIT_RATIO),
            ("gpu_percent", names.COMPONENT_GPU, 0.01, names.UNIT_RATIO),
            ("memory_mb", names.COMPONENT_MEMORY, _MB, names.UNIT_BYTES),
            ("io_operations", names.COMPONENT_IO, 1.0, "{operation}"),
        ):
            if isinstance(data.get(field), float):
                self._metrics.set_gauge(name, data[field] * scale, attributes, unit, scope=record.scope)

    def _on_checkpoint(self, record: Record) -> None:
        self._metrics.add(names.CHECKPOINTS, 1)
        if record.data.get("size_bytes"):
            self._metrics.add(names.CHECKPOINT_SIZE, record.data["size_bytes"])
        self._event(record, names.EVENT_CHECKPOINT, f"checkpoint {record.data['path']}",
                    values.flat_attributes({"lezea.checkpoint": record.data}))

    def _on_dataset_version(self, record: Record) -> None:
        self._event(record, names.EVENT_DATASET,
                    f"dataset {record.data['name']} {record.data.get('version_tag') or ''}".strip(),
                    values.flat_attributes({"lezea.dataset": record.data}))

    def _on_reward(self, record: Record) -> None:
        self._metrics.set_gauge(names.REWARD, record.data["reward"],
                                {names.AGENT_ROLE: record.data["role"], names.AGENT_ID: record.data["agent_id"]},
                                scope=record.scope)

    def _on_results(self, record: Record) -> None:
        for key, value in (record.data.get("result_dict") or {}).items():
            if isinstance(value, float):
                self._metrics.set_gauge(names.RESULT, value, {names.METRIC_KEY: key}, scope=record.scope)
        for role in ("tasker", "builder"):
            for agent, reward in (record.data.get(f"{role}_rewards") or {}).items():
                self._metrics.set_gauge(names.REWARD, reward, {names.AGENT_ROLE: role, names.AGENT_ID: agent},
                                        scope=record.scope)
        if record.data.get("action_outputs") is not None:
            self._event(record, names.EVENT_RESULTS, "action outputs",
                        {"lezea.action_outputs": values.json_text(record.data["action_outputs"])})

    def _on_resource_cost(self, record: Record) -> None:
        for kind, value in record.data.items():
            if isinstance(value, float):  # the gauge shows the run's running total, as the summary does
                self._cost_totals[kind] = self._cost_totals.get(kind, 0.0) + value
                self._metrics.set_gauge(names.COST, self._cost_totals[kind], {names.COST_KIND: kind})
        self._event(record, names.EVENT_COST, "resource cost", values.flat_attributes({"lezea.cost": record.data}))

    def _on_business_metrics(self, record: Record) -> None:
        for key, value in record.data["metrics"].items():
            self._metrics.set_gauge(names.BUSINESS, value, {names.METRIC_KEY: key})

    def _on_comment(self, record: Record) -> None:
        self._metrics.add(names.COMMENTS, 1, {"lezea.comment.kind": "comment"})
        self._event(record, names.EVENT_COMMENT, record.data["text"], {})

    def _on_conclusion(self, record: Record) -> None:
        self._metrics.add(names.COMMENTS, 1, {"lezea.comment.kind": "conclusion"})
        self._event(record, names.EVENT_CONCLUSION, record.data["text"], {})
