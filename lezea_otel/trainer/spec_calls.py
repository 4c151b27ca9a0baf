"""The spec's ``log_*`` and introspection calls, on the run's :class:`.session.Session`.

Each call: make sure the run is live, shape the arguments (``calls``/``values``), emit one record.
"""

from __future__ import annotations

import time
from typing import Any

from lezea_otel.audit.reader import read_events
from lezea_otel.audit.record import Kind, Record
from lezea_otel.model.metric_stats import GOALS, SUMMARIES
from lezea_otel.model.recommendations import recommend
from lezea_otel.model.run_state import merge_measured
from lezea_otel.trainer import shaping
from lezea_otel.trainer.session import Session
from lezea_otel.util import values

_MB = 2**20
_MAX_KEY = values.MAX_KEY
"""The longest metric key (``log_training_step`` cuts longer ones, ``define_metric`` refuses them); a module
global: the hot path reads it per key."""
_MAX_SERIES = 10_000
"""Scope/split series whose last step and loss are kept for ``delta_loss`` and the step-order check."""


def read_now(metrics: dict[Any, Any]) -> None:
    """Values that are not plain numbers (tensors, numpy scalars) become numbers now, in place; what is
    no number at all stays for the worker's shaping, which warns about it."""
    for key, value in metrics.items():
        kind = type(value)
        if kind is not float and kind is not int:
            number = values.scalar(value)
            if number is not values.NOT_A_NUMBER:
                metrics[key] = number


class SpecCalls:
    """The spec's ``log_*`` and introspection calls: the facade delegates to these."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # -- 3) configuration ------------------------------------------------------------------------

    def log_lezea_config(
        self,
        tasker_population_size: int | None = None,
        builder_population_size: int | None = None,
        algorithm_type: str | None = None,
        start_network_id: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        seeds: dict[str, int] | None = None,
        initialization_scheme: str | None = None,
    ) -> None:
        """LeZeA configuration (spec 1.4): a config event, and attributes on the experiment span."""
        if not self._session.ready("log_lezea_config"):
            return
        data = shaping.config(self._session.warner("log_lezea_config"), tasker_population_size,
                            builder_population_size, algorithm_type, start_network_id, hyperparameters, seeds,
                            initialization_scheme)
        self._session.emit(Kind.CONFIG, None, data)

    # -- 4) training -----------------------------------------------------------------------------

    def log_training_step(self, step: int, metrics: dict[str, float], data_split: str | None = None) -> None:
        """One training step's values; ``delta_loss`` is added when ``loss`` is present.

        The hot path: the caller only captures the call (a copy of the dict, the scope, the time, and
        in async mode every value that is not a plain number read now: a tensor changes in place at the
        next ``optimizer.step()``); checking and bookkeeping happen in :meth:`_training_record`, on the
        worker in async mode.
        """
        session = self._session
        if (not session.started or session.finalized) and not session.ready("log_training_step"):
            return
        when = time.time_ns()
        path, trace_id, span_id = session.where()
        pipeline = session.pipeline
        if type(metrics) is dict:
            captured = metrics.copy()  # the caller may reuse its dict
            if pipeline.deferred:
                for value in captured.values():
                    if type(value) is not float and type(value) is not int:
                        read_now(captured)
                        break
        else:
            captured = metrics
        pipeline.submit_later("log_training_step", self._training_record, step, captured, data_split, path,
                              trace_id, span_id, when)
        if when >= session.probes.allocator_due_ns:  # the training loop's clock for the CUDA allocator
            devices = session.probes.allocator(when)
            if devices:
                session.emit(Kind.TORCH_MEMORY, None, {"devices": devices}, time_ns=when)

    def _training_record(self, step: Any, metrics: Any, data_split: Any, path: tuple[str, ...], trace_id: int,
                         span_id: int, time_ns: int) -> Record:
        clean: dict[str, float] | None = None
        if type(metrics) is dict:
            clean = metrics
            for key, value in metrics.items():  # plain floats, ints within 64 bits, ASCII keys; else shaped
                if type(value) is float:
                    if value - value != 0 or type(key) is not str or not key.isascii() \
                            or not 0 < len(key) <= _MAX_KEY:
                        clean = None
                        break
                elif type(value) is not int or not -9223372036854775808 <= value <= 9223372036854775807 \
                        or type(key) is not str or not key.isascii() or not 0 < len(key) <= _MAX_KEY:
                    clean = None
                    break
        if clean is None:
            clean = values.numbers(metrics, "metrics", self._session.warner("log_training_step"))
        if type(step) is not int or not 0 <= step <= 9223372036854775807:
            if step is None:
                self._session.warnings.warn("log_training_step", "step is None", "recorded without a step")
            step = values.step_value(step, "step", self._session.warner("log_training_step"))
        if data_split is not None and (type(data_split) is not str or len(data_split) > values.MAX_LABEL
                                       or not data_split.isascii()):
            data_split = values.label(data_split, "data_split", self._session.warner("log_training_step"))
        last = self._session.last
        series = (path, data_split)
        previous = last.get(series)
        loss = clean.get("loss")
        if previous is None:
            last[series] = (step, loss if loss is not None and loss - loss == 0 else None)
            if len(last) > _MAX_SERIES:  # bounded memory: the oldest series loses its delta base
                del last[next(iter(last))]
        else:
            previous_step, previous_loss = previous
            if step is not None and previous_step is not None and step <= previous_step:
                self._session.warnings.warn("log_training_step", "step did not increase",
                                            f"step {step} after step {previous_step}; recorded as given")
            if loss is not None and previous_loss is not None and "delta_loss" not in clean:
                clean["delta_loss"] = loss - previous_loss
            # after a NaN, delta_loss restarts from the last real loss
            last[series] = (step if step is not None else previous_step,
                            loss if loss is not None and loss - loss == 0 else previous_loss)
        return Record(Kind.TRAINING_STEP, time_ns, step, path, trace_id, span_id,
                      {"data_split": data_split} if data_split is not None else {}, clean)

    def define_metric(self, key: Any, goal: Any = None, summary: Any = None) -> None:
        """Which way is better for ``key`` and what its summary value is (W&B's ``define_metric``): a
        record, so the CLI reads the same. A bad argument is one warning and is left out; a bad key drops
        the call."""
        if not self._session.ready("define_metric"):
            return
        warn = self._session.warner("define_metric")
        if type(key) is not str or not key.strip() or len(key) > _MAX_KEY or not key.isascii():
            warn(f"key must be a metric key (ASCII text of 1 to {_MAX_KEY} characters), got "
                 f"{values.sanitise(key)!r:.80}", "the call was ignored")
            return
        if goal is not None:
            wanted = GOALS.get(goal) if isinstance(goal, str) else None
            if wanted is None:
                warn(f"goal must be 'min', 'max' or None, got {values.sanitise(goal)!r:.80}",
                     "the goal was left out: the key keeps the one its name gives, if any")
            goal = wanted
        if summary is not None and summary not in SUMMARIES:
            warn(f"summary must be one of {', '.join(SUMMARIES)} or None, got "
                 f"{values.sanitise(summary)!r:.80}", "the summary was left out")
            summary = None
        self._session.emit(Kind.METRIC_DEFINITION, None, {"key": key, "goal": goal, "summary": summary})

    def log_modification_tree(self, step: int | None = None, modifications: list[Any] | None = None,
                              statistics: dict[str, Any] | None = None) -> None:
        """A modification tree: an event with its structure, its numeric statistics as metrics."""
        if not self._session.ready("log_modification_tree"):
            return
        warn = self._session.warner("log_modification_tree")
        self._session.emit(Kind.MODIFICATION_TREE, values.step_value(step, "step", warn), {
            "modifications": shaping.modifications(warn, modifications),
            "statistics": shaping.statistics(warn, statistics)})

    def log_modification_tree_stats(self, statistics: dict[str, Any], step: int | None = None) -> None:
        if self._session.ready("log_modification_tree_stats"):
            warn = self._session.warner("log_modification_tree_stats")
            self._session.emit(Kind.MODIFICATION_TREE_STATS, values.step_value(step, "step", warn),
                               {"statistics": shaping.statistics(warn, statistics, required=True)})

    def log_modification_stats(self, statistics: dict[str, Any], step: int | None = None) -> None:
        if self._session.ready("log_modification_stats"):
            warn = self._session.warner("log_modification_stats")
            self._session.emit(Kind.MODIFICATION_STATS, values.step_value(step, "step", warn),
                               {"statistics": shaping.statistics(warn, statistics, required=True)})

    def log_data_splits(self, train_ids: Any = None, val_ids: Any = None, test_ids: Any = None) -> None:
        """Split sizes as metrics; the ids (up to 10,000 each) and a digest of all in the audit."""
        if not self._session.ready("log_data_splits"):
            return
        warn = self._session.warner("log_data_splits")
        data = {}
        if train_ids is None and val_ids is None and test_ids is None:
            warn("no split given", "train_ids, val_ids and test_ids are all None; nothing recorded")
            return
        for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids)):
            if ids is None:  # an omitted split is not an empty one
                continue
            shaped = shaping.split(warn, f"{name}_ids", ids)
            if shaped is not None:
                data[name] = shaped
        self._session.emit(Kind.DATA_SPLITS, None, data)

    def log_data_usage(self, sample_ids: Any, epoch: int | None = None) -> None:
        if not self._session.ready("log_data_usage"):
            return
        warn = self._session.warner("log_data_usage")
        shaped = shaping.split(warn, "sample_ids", sample_ids)
        if shaped is not None:
            self._session.emit(Kind.DATA_USAGE, None, {"epoch": values.step_value(epoch, "epoch", warn),
                                                       "count": shaped["count"], "sha256": shaped["sha256"],
                                                       "sample_ids": shaped["ids"],
                                                       "truncated": shaped["truncated"]})

    def log_data_score(self, sample_id: Any, before_loss: float, after_loss: float,
                       step: int | None = None) -> None:
        """How much one sample helped: ``score = before_loss - after_loss`` (a histogram, no sample id
        label)."""
        if self._session.ready("log_data_score"):
            warn = self._session.warner("log_data_score")
            self._session.emit(Kind.DATA_SCORE, values.step_value(step, "step", warn),
                               shaping.data_score(warn, sample_id, before_loss, after_loss))

    def log_delta_loss(self, epoch: int, loss: float, prev_loss: float | None = None) -> None:
        if not self._session.ready("log_delta_loss"):
            return
        warn = self._session.warner("log_delta_loss")
        current = values.number(loss, "loss", warn)
        previous = values.number(prev_loss, "prev_loss", warn) if prev_loss is not None else None
        delta = current - previous if current is not None and previous is not None else None
        self._session.emit(Kind.DELTA_LOSS, None, {"epoch": values.step_value(epoch, "epoch", warn),
                                                   "loss": current, "prev_loss": previous,
                                                   "delta_loss": delta})

    # -- 5) resources ----------------------------------------------------------------------------

    def log_resource(self, component_id: str, cpu: float | None = None, gpu: float | None = None,
                     mem: float | None = None) -> None:
        """One-liner resources: ``cpu``/``gpu`` in percent, ``mem`` in MB."""
        if self._session.ready("log_resource"):
            self._session.emit(Kind.RESOURCE, None, shaping.resource(
                self._session.warner("log_resource"), component_id, None, cpu, gpu, mem, None,
                ("cpu", "gpu", "mem", "")))

    def log_component_resources(self, component_id: str, component_type: str | None = None,
                                cpu_percent: float | None = None, memory_mb: float | None = None,
                                gpu_util_percent: float | None = None,
                                io_operations: float | None = None) -> None:
        if self._session.ready("log_component_resources"):
            self._session.emit(Kind.RESOURCE, None, shaping.resource(
                self._session.warner("log_component_resources"), component_id, component_type, cpu_percent,
                gpu_util_percent, memory_mb, io_operations))

    # -- 6) checkpoints and datasets ---------------------------------------------------------------

    def log_checkpoint(self, checkpoint_path: str, step: int | None = None,
                       metadata: dict[str, Any] | None = None) -> None:
        """A checkpoint event with path, size and sha256 (files up to ``LEZEA_CHECKPOINT_HASH_MAX_MB``)."""
        if self._session.ready("log_checkpoint"):
            warn = self._session.warner("log_checkpoint")
            self._session.emit(Kind.CHECKPOINT, values.step_value(step, "step", warn),
                               shaping.checkpoint(warn, checkpoint_path,
                                                self._session.settings.checkpoint_hash_max_bytes, metadata))

    def log_dataset_version(self, dataset_name: str, version_tag: str | None = None,
                            dataset_path: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        if self._session.ready("log_dataset_version"):
            self._session.emit(Kind.DATASET_VERSION, None, shaping.dataset(
                self._session.warner("log_dataset_version"), dataset_name, version_tag, dataset_path,
                metadata))

    # -- 7) results ------------------------------------------------------------------------------

    def log_results(self, result_dict: dict[str, Any] | None = None,
                    tasker_rewards: dict[str, float] | None = None,
                    builder_rewards: dict[str, float] | None = None, action_outputs: Any = None,
                    step: int | None = None) -> None:
        """Unified (``result_dict``) or granular results; rewards become per-agent gauges."""
        if not self._session.ready("log_results"):
            return
        warn = self._session.warner("log_results")
        if result_dict is None and tasker_rewards is None and builder_rewards is None \
                and action_outputs is None:
            warn("nothing to record", "no result_dict, tasker_rewards, builder_rewards or action_outputs")
            return
        data: dict[str, Any] = {}
        if result_dict is not None:
            data["result_dict"] = values.numbers(result_dict, "result_dict", warn)
        for role, rewards in (("tasker", tasker_rewards), ("builder", builder_rewards)):
            if rewards is not None:
                data[f"{role}_rewards"] = shaping.rewards(warn, rewards, f"{role}_rewards")
        if action_outputs is not None:
            data["action_outputs"] = values.plain(action_outputs, "action_outputs", warn)
        self._session.emit(Kind.RESULTS, values.step_value(step, "step", warn), data)

    def log_reward(self, agent_id: str, reward: float, step: int | None = None,
                   agent_type: str = "tasker") -> None:
        if not self._session.ready("log_reward"):
            return
        warn = self._session.warner("log_reward")
        value = values.number(reward, "reward", warn)
        if value is not None:
            self._session.emit(Kind.REWARD, values.step_value(step, "step", warn), {
                "agent_id": values.label(agent_id, "agent_id", warn) or "unknown",
                "role": values.label(agent_type, "agent_type", warn) or "tasker", "reward": value})

    # -- 8) business -----------------------------------------------------------------------------

    def log_resource_cost(self, cpu_hours: float | None = None, mem_gb: float | None = None,
                          io_bytes: float | None = None, gpu_hours: float | None = None,
                          cost_eur: float | None = None) -> None:
        """Resource usage and money; totals accumulate over calls and appear in the summary."""
        if not self._session.ready("log_resource_cost"):
            return
        warn = self._session.warner("log_resource_cost")
        data = {name: values.number(raw, name, warn) for name, raw in (
            ("cpu_hours", cpu_hours), ("gpu_hours", gpu_hours), ("mem_gb", mem_gb), ("io_bytes", io_bytes),
            ("cost_eur", cost_eur)) if raw is not None}
        for name, value in data.items():
            if value is not None and value < 0:  # totals add up: a refund lowers them, a typo too
                warn(f"{name} is negative", f"got {values.format_number(value)}; added as given")
        self._session.emit(Kind.RESOURCE_COST, None, {k: v for k, v in data.items() if v is not None})

    def log_comment(self, comment: str) -> None:
        if self._session.ready("log_comment"):
            text = values.text(comment, "comment", self._session.warner("log_comment"))
            if text is not None:
                self._session.emit(Kind.COMMENT, None, {"text": text})

    def log_conclusion(self, conclusion: str) -> None:
        if self._session.ready("log_conclusion"):
            text = values.text(conclusion, "conclusion", self._session.warner("log_conclusion"))
            if text is not None:
                self._session.emit(Kind.CONCLUSION, None, {"text": text})

    def log_business_metrics(self, resource_cost_eur: float | None = None, **metrics: float) -> None:
        """Business figures (``resource_cost_eur`` is the run's cost so far) as ``lezea.business`` gauges."""
        if not self._session.ready("log_business_metrics"):
            return
        raw = dict(metrics)
        if resource_cost_eur is not None:
            raw["resource_cost_eur"] = resource_cost_eur
        self._session.emit(Kind.BUSINESS_METRICS, None, {"metrics": values.numbers(
            raw, "business metrics", self._session.warner("log_business_metrics"))})

    # -- 9) introspection ------------------------------------------------------------------------

    def get_experiment_summary(self) -> dict[str, Any]:
        """The run so far, from its own record: steps, metrics (last/best per key and scope), ..."""
        self._session.pipeline.drain()
        summary = self._session.state.summary(time.time_ns())
        link = self._session.link
        if link is not None:
            merge_measured(summary, {"observed": link.current().get("observed"),
                                     "scope_resources": link.scope_summaries()})
        summary["experiment"] = {
            "id": self._session.experiment_id, "name": self._session.experiment_name,
            "purpose": self._session.purpose, "tags": list(self._session.tags),
            "run_dir": str(self._session.run_dir), "audit": str(self._session.audit_path),
            "targets": list(self._session.targets),
            "launch": self._session.launch.as_record(),  # this rank's identity; its own figures above
        }
        summary["signals"] = {
            "spans": self._session.spans.ended,
            "audit_lines": self._session.pipeline.audit.seq,
            "audit_lost": self._session.pipeline.audit.lost_lines,
        }
        summary["delivery"] = self._session.delivery()
        summary["warnings"] = {"count": self._session.warnings.count,
                               "messages": list(self._session.warnings.messages[:50])}
        summary["cost"]["total_eur"] = self._session.state.total_cost_eur()
        return summary

    def get_experiment_data(self) -> dict[str, Any]:
        """Everything recorded, read back from the audit: full per-step history and every event."""
        self._session.pipeline.flush()
        problems: list[str] = []
        events = list(read_events(self._session.audit_path, problems))
        history: dict[str, list[list[Any]]] = {}
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_kind.setdefault(event["kind"], []).append(event)
            if event["kind"] == "training_step":
                split = event["data"].get("data_split")
                scope = event["scope"]
                for key, value in event["data"].get("metrics", {}).items():
                    if split:  # the same naming as the summary: <scope>/<split>/<key>
                        bare = key[len(scope) + 1:] if scope else key
                        key = "/".join(part for part in (scope, split, bare) if part)
                    history.setdefault(key, []).append([event["step"], value])
        return {"experiment_id": self._session.experiment_id, "name": self._session.experiment_name,
                "purpose": self._session.purpose, "tags": list(self._session.tags), "metrics": history,
                "events_by_kind": by_kind, "events": events, "problems": problems}

    def get_recommendations(self) -> list[dict[str, Any]]:
        """Advice from this run's record (NaN loss, plateau, idle GPU, cost over limit, slow phase)."""
        self._session.pipeline.drain()
        state = self._session.state
        end = state.end_ns or time.time_ns()
        duration = (end - state.start_ns) / 1e9 if state.start_ns else 0.0
        return recommend(state, self._session.settings.cost_limit_eur, duration)
