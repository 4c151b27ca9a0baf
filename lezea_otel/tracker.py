"""The tracker facade of the LeZeA connector spec: short, documented delegations to composed parts.

The parts, each given what it shares as an explicit constructor argument:

- :class:`.trainer.session.Session`: the run in the training process (identity, settings, the
  record path, the scope stack, the exporter beside it) and its lifecycle;
- :class:`.trainer.spec_calls.SpecCalls`: the ``log_*`` and introspection calls;
- :class:`.trainer.scope_calls.ScopeCalls`: the scope calls and ``span()``;
- :class:`.trainer.watch.Watches`: ``watch()`` and ``unwatch()`` (phases from PyTorch's hooks).

Every public call shapes its input into one record and appends it to the audit; an exporter beside
the trainer makes OpenTelemetry of the audit. No call raises into training code: bad input gives one
warning on the ``lezea_otel`` logger and the valid part is still recorded.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lezea_otel.config.settings import Settings
from lezea_otel.exceptions import LezeaConfigError
from lezea_otel.trainer.scope_calls import NetworkType, ScopeCalls
from lezea_otel.trainer.scopes import TracedBlock
from lezea_otel.trainer.session import Session
from lezea_otel.trainer.spec_calls import SpecCalls
from lezea_otel.trainer.watch import Watches
from lezea_otel.util.safety import SELF, guarded, guarded_constructor, truth

__all__ = ["ExperimentTracker", "NetworkType"]

T = TypeVar("T")


def _exporter_thread(*args: Any, **kwargs: Any) -> Any:
    """The exporter's assembly for ``LEZEA_EXPORTER=thread`` (and the test kit), imported only then:
    in the default mode the training process never loads the OpenTelemetry SDK."""
    from lezea_otel.exporter.assemble import build_service

    return build_service(*args, **kwargs)


class ExperimentTracker:
    """One experiment run: a root span, its scopes and phases, metrics, events, and a local audit.

    Example:
        ```py
        tracker = ExperimentTracker("Demo", purpose="sanity", auto_start=True)
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 0.42})
        tracker.finalize_experiment()
        ```
    Keyword-only arguments override ``LEZEA_*`` and ``OTEL_*`` variables (see README).
    """

    @guarded_constructor(fill={"experiment_name": "unnamed"}, passthrough=(LezeaConfigError,))
    def __init__(
        self,
        experiment_name: str,
        purpose: str = "",
        tags: Sequence[str] | None = None,
        auto_start: bool = False,
        async_mode: bool = False,
        *,
        runs_dir: str | Path | None = None,
        service_name: str | None = None,
        endpoint: str | None = None,
        protocol: str | None = None,
        quiet: bool | None = None,
        cost_limit_eur: float | None = None,
        extra_exporters: Sequence[Any] = (),
    ) -> None:
        session = Session(experiment_name, purpose, tags, async_mode, {
            "runs_dir": runs_dir, "service_name": service_name, "endpoint": endpoint, "protocol": protocol,
            "quiet": quiet, "cost_limit_eur": cost_limit_eur}, extra_exporters, _exporter_thread)
        self._session = session
        self._warnings = session.warnings  # the guards count their warnings here
        self._calls = SpecCalls(session)
        self._scopes = ScopeCalls(session)
        self._watches = Watches(session, self._scopes.iterate)
        # Dropped without finalize (garbage-collected, or alive at exit): the run still ends, records kept.
        weakref.finalize(self, session.abandon)
        if truth(auto_start, "auto_start", session.warner("ExperimentTracker")):
            self.start()

    # --- identity -----------------------------------------------------------------------------

    @property
    def experiment_id(self) -> str:
        return self._session.experiment_id

    @property
    def experiment_name(self) -> str:
        return self._session.experiment_name

    @property
    def purpose(self) -> str:
        return self._session.purpose

    @property
    def tags(self) -> list[str]:
        return self._session.tags

    @property
    def settings(self) -> Settings:
        """The resolved settings (arguments > ``LEZEA_*`` > ``OTEL_*`` > defaults) and their problems."""
        return self._session.settings

    @property
    def run_dir(self) -> Path:
        """``runs/<experiment_id>/`` (a forked worker's: ``workers/<pid>/`` under it)."""
        return self._session.run_dir

    @property
    def audit_path(self) -> Path:
        """``events.jsonl``: one JSON line per call, the run's source of truth."""
        return self._session.audit_path

    # --- lifecycle ---------------------------------------------------------------------------

    @guarded(default=SELF, passthrough=(LezeaConfigError,))
    def start(self, strict: bool | None = None, prometheus_port: int | None = 8000) -> ExperimentTracker:
        """Open the run: the exporter beside the trainer, root span ids, ``/metrics``, environment and git.

        Configuration problems are warned here, and raised (``LezeaConfigError``) only when
        ``strict`` (or ``LEZEA_STRICT=1``) is set. ``prometheus_port=None`` or ``0`` serves no
        ``/metrics``; a rank serves on the port plus its ``LOCAL_RANK``, and a port already taken moves the
        run to the next free one (said on the console line). Returns the tracker; a second call does
        nothing.
        """
        self._session.start(strict, prometheus_port)
        return self

    @guarded(default=lambda: dict(os.environ))
    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a child process whose tracker joins this experiment, under the scope or
        phase open now: ``subprocess.run(cmd, env=tracker.child_env())`` (an evaluation job, a data
        preprocessing worker).

        Args:
            base: the environment to extend (default: this process's).

        Returns:
            ``base`` plus ``LEZEA_EXPERIMENT_ID``, ``LEZEA_RUNS_DIR``, ``LEZEA_PARENT_RUN`` (the child's run
            goes into ``children/<pid>/`` of this run's folder) and a W3C ``TRACEPARENT`` (its spans nest
            under the current span, in this trace). The rank variables pass on as they are.
        """
        return self._session.child_env(base)

    @guarded()
    def finalize_experiment(self) -> dict[str, Any] | None:
        """End the run: write the end record, wait (within ``LEZEA_SHUTDOWN_TIMEOUT``) for the exporter
        to deliver it, return the summary.

        Idempotent, and safe from any thread (from several at once) and from a signal handler: the
        run ends exactly once. A handler that interrupted one of this package's own calls ends the
        run as that call returns, never in the middle of it, and gets the summary so far.
        ``end()`` is the same call.
        """
        self._session.finalize_call()
        return self._calls.get_experiment_summary()

    @guarded()
    def end(self) -> dict[str, Any] | None:
        """Alias of :meth:`finalize_experiment`."""
        return self.finalize_experiment()

    # --- scopes and phases ----------------------------------------------------------------------

    @guarded(default=TracedBlock.noop)
    def builder_scope(self, builder_id: Any) -> TracedBlock:
        """Records inside get the ``builder:<id>/`` prefix and a child span."""
        return self._scopes.builder_scope(builder_id)

    @guarded(default=TracedBlock.noop)
    def tasker_scope(self, tasker_id: Any) -> TracedBlock:
        """Records inside get the ``tasker:<id>/`` prefix and a child span."""
        return self._scopes.tasker_scope(tasker_id)

    @guarded(default=TracedBlock.noop)
    def algorithm_scope(self, algorithm_id: Any) -> TracedBlock:
        """Records inside get the ``algorithm:<id>/`` prefix and a child span."""
        return self._scopes.algorithm_scope(algorithm_id)

    @guarded(default=TracedBlock.noop)
    def network_scope(self, network_id: Any, network_type: NetworkType | str | None = None) -> TracedBlock:
        """Records inside get the ``network:<id>/`` prefix and a child span; ``network_type`` an attribute."""
        return self._scopes.network_scope(network_id, network_type)

    @guarded(default=TracedBlock.noop)
    def layer_scope(self, layer_id: Any) -> TracedBlock:
        """Records inside get the ``layer:<id>/`` prefix and a child span."""
        return self._scopes.layer_scope(layer_id)

    @guarded(default=TracedBlock.noop)
    def span(self, name: str, **attributes: Any) -> TracedBlock:
        """Time any stretch of training as a child span, as ``with`` block or decorator.

        Each phase name gets a duration histogram (``lezea.phase.duration``) whose exemplars
        link to the span; on a GPU (torch with CUDA initialised) the span also gets its GPU time
        (``lezea.phase.gpu.duration``, CUDA events, resolved off the training thread).
        ``sync=True`` is not an attribute: the phase waits for its GPU work at exit (exact wall time,
        at the cost of a synchronisation).
        """
        return self._scopes.span(name, **attributes)

    @guarded(default=lambda: iter(()))
    def iterate(self, iterable: Iterable[T], phase: str = "data") -> Iterator[T]:
        """The items of ``iterable`` (a ``DataLoader``, any iterable), the wait for each timed as the phase
        ``phase`` (``lezea.phase.kind = data_wait``): "the input pipeline is the bottleneck", measured.

        Example:
            ```py
            for batch in tracker.iterate(loader):  # a "data" phase per batch
                with tracker.span("forward"):
                    ...
            ```
        Returns:
            An iterator over the same items; the iterable's own exceptions are raised unchanged.
        """
        return self._scopes.iterate(iterable, phase)

    @guarded()
    def watch(self, model: Any, optimizer: Any = None, loader: Any = None) -> None:
        """Record the forward, backward and optimizer phases of ``model`` through PyTorch's own hooks, for
        a loop nobody wrapped in :meth:`span`; given ``loader``, the wait for each batch too (``data``).

        Example:
            ```py
            tracker.watch(model, optimizer, loader=loader)
            for x, y in loader:             # a "data" phase per batch
                loss = loss_fn(model(x), y)  # "forward"
                loss.backward()             # "backward"
                optimizer.step()            # "optimizer"
                tracker.log_training_step(step, {"loss": loss.item()})
            tracker.unwatch(model)
            ```
        The phases nest under the scope open at the time, with GPU time where CUDA is used, and belong to
        the step as written phases do. ``optimizer``: one optimizer, a list of them, or None. A second
        ``watch`` of the same model is a warning, never double phases. What a hook cannot see is in the
        README (gradient accumulation, several optimizers, ``torch.compile``).
        """
        self._watches.watch(model, optimizer, loader)

    @guarded()
    def unwatch(self, model: Any = None) -> None:
        """Remove every hook :meth:`watch` put on ``model`` (on every model this tracker watches when
        None) and give its loader its own class back."""
        self._watches.unwatch(model)

    # --- the spec's calls ------------------------------------------------------------------------

    @guarded()
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
        return self._calls.log_lezea_config(tasker_population_size, builder_population_size, algorithm_type,
                                            start_network_id, hyperparameters, seeds, initialization_scheme)

    @guarded()
    def log_training_step(self, step: int, metrics: dict[str, float], data_split: str | None = None) -> None:
        """One training step's values; ``delta_loss`` is added when ``loss`` is present.

        The hot path: the caller only captures the call (a copy of the dict, the scope, the time);
        checking and bookkeeping happen in :meth:`_training_record`, on the worker in async mode.
        """
        return self._calls.log_training_step(step, metrics, data_split)

    @guarded()
    def define_metric(self, key: str, goal: str | None = None, summary: str | None = None) -> None:
        """Declare which way is better for a metric and what sums it up, as W&B's ``define_metric`` does.

        ``key``: a key as logged (``"loss"``: in every scope and split), a full summary name
        (``"builder:3/val/loss"``), or a ``*`` glob (``"val/*"``). ``goal``: ``"min"`` or ``"max"``
        (``"minimize"``/``"maximize"`` too) is what ``best`` means for it; ``None`` leaves the goal to the
        key's name (``loss``, ``error``, ``perplexity``, ``wer``/``cer``: min; ``accuracy``/``acc``,
        ``reward``, ``f1``, ``precision``, ``recall``, ``auc``: max; any other: no goal, no best).
        ``summary``: ``"last"``, ``"best"``, ``"min"``, ``"max"`` or ``"mean"``, the figure given as
        ``summary["metrics"][name]["summary"]``. The first key declared with a goal or a summary is the
        run's headline (closing line, ``lezea-otel runs``), its latest-logged scope. Applies to values
        logged before the call too; recorded in the audit, so ``lezea-otel show`` agrees. Never raises: a
        bad argument is one warning.
        """
        return self._calls.define_metric(key, goal, summary)

    @guarded()
    def log_modification_tree(self, step: int | None = None, modifications: list[Any] | None = None,
                              statistics: dict[str, Any] | None = None) -> None:
        """A modification tree: an event with its structure, its numeric statistics as metrics."""
        return self._calls.log_modification_tree(step, modifications, statistics)

    @guarded()
    def log_modification_tree_stats(self, statistics: dict[str, Any], step: int | None = None) -> None:
        """Statistics of a modification tree at ``step``: gauges ``lezea.modification.stat``."""
        return self._calls.log_modification_tree_stats(statistics, step)

    @guarded()
    def log_modification_stats(self, statistics: dict[str, Any], step: int | None = None) -> None:
        """Statistics of one modification at ``step``: gauges ``lezea.modification.stat``."""
        return self._calls.log_modification_stats(statistics, step)

    @guarded()
    def log_data_splits(self, train_ids: Any = None, val_ids: Any = None, test_ids: Any = None) -> None:
        """Split sizes as metrics; the ids (up to 10,000 each) and a digest of all in the audit."""
        return self._calls.log_data_splits(train_ids, val_ids, test_ids)

    @guarded()
    def log_data_usage(self, sample_ids: Any, epoch: int | None = None) -> None:
        """Samples used (ids hashed, never metric attributes): counter ``lezea.data.samples.used`` and an
        event."""
        return self._calls.log_data_usage(sample_ids, epoch)

    @guarded()
    def log_data_score(self, sample_id: Any, before_loss: float, after_loss: float,
                       step: int | None = None) -> None:
        """How much one sample helped: ``score = before_loss - after_loss`` (a histogram, no sample id
        label)."""
        return self._calls.log_data_score(sample_id, before_loss, after_loss, step)

    @guarded()
    def log_delta_loss(self, epoch: int, loss: float, prev_loss: float | None = None) -> None:
        """An epoch's loss and its change since the previous one: gauges and the summary's trend."""
        return self._calls.log_delta_loss(epoch, loss, prev_loss)

    @guarded()
    def log_resource(self, component_id: str, cpu: float | None = None, gpu: float | None = None,
                     mem: float | None = None) -> None:
        """One-liner resources: ``cpu``/``gpu`` in percent, ``mem`` in MB."""
        return self._calls.log_resource(component_id, cpu, gpu, mem)

    @guarded()
    def log_component_resources(self, component_id: str, component_type: str | None = None,
                                cpu_percent: float | None = None, memory_mb: float | None = None,
                                gpu_util_percent: float | None = None,
                                io_operations: float | None = None) -> None:
        """One component's resources (CPU and GPU in percent, memory in MB, IO operations): per-component
        gauges, and the component's totals in the summary."""
        return self._calls.log_component_resources(component_id, component_type, cpu_percent, memory_mb,
                                                   gpu_util_percent, io_operations)

    @guarded()
    def log_checkpoint(self, checkpoint_path: str, step: int | None = None,
                       metadata: dict[str, Any] | None = None) -> None:
        """A checkpoint event with path, size and sha256 (files up to ``LEZEA_CHECKPOINT_HASH_MAX_MB``)."""
        return self._calls.log_checkpoint(checkpoint_path, step, metadata)

    @guarded()
    def log_dataset_version(self, dataset_name: str, version_tag: str | None = None,
                            dataset_path: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        """A dataset version (name, tag, hash, path): an event, and the summary's datasets."""
        return self._calls.log_dataset_version(dataset_name, version_tag, dataset_path, metadata)

    @guarded()
    def log_results(self, result_dict: dict[str, Any] | None = None,
                    tasker_rewards: dict[str, float] | None = None,
                    builder_rewards: dict[str, float] | None = None, action_outputs: Any = None,
                    step: int | None = None) -> None:
        """Unified (``result_dict``) or granular results; rewards become per-agent gauges."""
        return self._calls.log_results(result_dict, tasker_rewards, builder_rewards, action_outputs, step)

    @guarded()
    def log_reward(self, agent_id: str, reward: float, step: int | None = None,
                   agent_type: str = "tasker") -> None:
        """A reward of one tasker or builder: gauge ``lezea.reward`` by role and agent id."""
        return self._calls.log_reward(agent_id, reward, step, agent_type)

    @guarded()
    def log_resource_cost(self, cpu_hours: float | None = None, mem_gb: float | None = None,
                          io_bytes: float | None = None, gpu_hours: float | None = None,
                          cost_eur: float | None = None) -> None:
        """Resource usage and money; totals accumulate over calls and appear in the summary."""
        return self._calls.log_resource_cost(cpu_hours, mem_gb, io_bytes, gpu_hours, cost_eur)

    @guarded()
    def log_comment(self, comment: str) -> None:
        """A free-text comment: a log record in the trace, and the summary's comments."""
        return self._calls.log_comment(comment)

    @guarded()
    def log_conclusion(self, conclusion: str) -> None:
        """The run's conclusion: a log record in the trace, and the summary's conclusion."""
        return self._calls.log_conclusion(conclusion)

    @guarded()
    def log_business_metrics(self, resource_cost_eur: float | None = None, **metrics: float) -> None:
        """Business figures (``resource_cost_eur`` is the run's cost so far) as ``lezea.business`` gauges."""
        return self._calls.log_business_metrics(resource_cost_eur, **metrics)

    @guarded(default=dict)
    def get_experiment_summary(self) -> dict[str, Any]:
        """The run so far, from its own record: steps, metrics (last/best per key and scope), ..."""
        return self._calls.get_experiment_summary()

    @guarded(default=dict)
    def get_experiment_data(self) -> dict[str, Any]:
        """Everything recorded, read back from the audit: full per-step history and every event."""
        return self._calls.get_experiment_data()

    @guarded(default=list)
    def get_recommendations(self) -> list[dict[str, Any]]:
        """Advice from this run's record (NaN loss, plateau, idle GPU, cost over limit, slow phase)."""
        return self._calls.get_recommendations()

    # --- for the test kit (lezea_otel.testing) --------------------------------------------------

    def _end_failed(self, error: BaseException, ended_by: str) -> None:
        """End the run as ``failed`` with ``error`` (no call of the spec): for a framework integration whose
        framework caught the exception that failed the training and tells its logger so (Lightning's
        ``Logger.finalize("failed")``), so the run ends failed even when the user's code catches the
        exception and goes on. ``ended_by``: the framework."""
        self._session.finalize(ended_by, error)

    def _sync_exporter(self) -> None:
        """Thread mode: everything recorded so far reaches the exporter's local destinations now."""
        self._session.sync_exporter()

    def _sample_observers(self) -> None:
        """Thread mode: the exporter's observers take a sample now."""
        self._session.sample_observers()
