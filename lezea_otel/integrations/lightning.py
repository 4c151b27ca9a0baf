"""Lightning: ``LezeaLogger`` (Lightning's ``Logger``: values, hyperparameters as the config record,
checkpoints, the run's end) and ``LezeaCallback`` (each training batch's phases, validation and checkpoint
saving), alone or together, on one process or under DDP.

```py
from lezea_otel.integrations.lightning import LezeaCallback, LezeaLogger
trainer = Trainer(logger=LezeaLogger("mnist"), callbacks=[LezeaCallback()])
```

Where the callback's phases come from, since a callback sees Lightning's hooks and not the calls inside them:
``data`` is each fetch of a training batch, which Lightning reports to its profiler (the action
``train_dataloader_next``; the callback puts a profiler in front of the trainer's, which still gets every
call); ``forward`` runs from ``on_train_batch_start`` to
``on_before_backward`` (``training_step`` and ``zero_grad``); ``backward`` to ``on_after_backward``;
``optimizer`` from ``on_before_optimizer_step`` to ``on_train_batch_end``; ``validation`` from
``on_validation_start`` to ``on_validation_end``; ``checkpoint`` around ``trainer.save_checkpoint``.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.integrations.common import (
    Phases,
    Run,
    log_values,
    missing,
    never_raises,
    plain_config,
)
from lezea_otel.tracker import ExperimentTracker

try:
    import lightning.pytorch as pl
    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.loggers.logger import Logger
    from lightning.pytorch.profilers import Profiler
    from lightning.pytorch.utilities import rank_zero_only
except ImportError as error:  # pragma: no cover - the test extra installs it
    raise missing("Lightning", "lightning", error) from error

__all__ = ["LezeaCallback", "LezeaLogger"]

_FETCH = ".train_dataloader_next"
"""The end of the profiler action of each fetch of a training batch (``[_TrainingEpochLoop].train_...``)."""
_DATA_WAIT = {names.PHASE_KIND: names.DATA_WAIT}
_EPOCH = ("epoch",)
"""Lightning adds the epoch to every dict of values it logs: kept beside training values only."""


class LezeaLogger(Logger):
    """Lightning's values, hyperparameters and checkpoints in a tracker's run (on rank 0, as every
    Lightning logger records).

    Args:
        tracker: an ``ExperimentTracker`` to record to; None makes one (``experiment_name``, ``purpose``,
            ``tags`` and ``tracker_options``, the tracker's keyword-only arguments) when first needed.
        end_run: whether ``finalize`` ends the run; None: only a run this logger made. Pass your own
            tracker to keep logging after ``fit`` (a ``trainer.test`` then) and end it yourself.
    """

    def __init__(self, experiment_name: str = "lightning", purpose: str = "",
                 tags: Sequence[str] | None = None, *, tracker: ExperimentTracker | None = None,
                 end_run: bool | None = None, **tracker_options: Any) -> None:
        super().__init__()
        self.run = Run(tracker, experiment_name, purpose, tags, tracker_options, end_run)
        self._logged: set[str] = set()
        self._last_step: int | None = None

    @property
    def name(self) -> str:
        return self.run.experiment_name

    @property
    def version(self) -> str:
        """The experiment id (Lightning names the checkpoint folder after it); rank 0 only makes the run."""
        return self.experiment.experiment_id if _rank() == 0 else ""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentTracker:
        """The run's tracker (a dummy on other ranks, as Lightning's loggers give)."""
        return self.run.tracker(_rank(), _world_size())

    @rank_zero_only
    @never_raises
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The hyperparameters (``save_hyperparameters``) as the run's config record."""
        hyperparameters = plain_config(params)
        if hyperparameters:
            self.experiment.log_lezea_config(hyperparameters=hyperparameters)

    @rank_zero_only
    @never_raises
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Values at Lightning's step (the optimizer steps so far); ``val_``/``val/`` ones in ``val``."""
        self._last_step = step
        log_values(self.experiment, step, metrics, _EPOCH)

    @rank_zero_only
    @never_raises
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """Each checkpoint file saved (the top k, the best, ``last``, the one just saved) once, at the step
        it was saved at (``ModelCheckpoint``'s own record of it; else the step of the last values)."""
        kept = [*checkpoint_callback.best_k_models, checkpoint_callback.best_model_path,
                checkpoint_callback.last_model_path,
                getattr(checkpoint_callback, "_last_checkpoint_saved", "")]
        step = getattr(checkpoint_callback, "_last_global_step_saved", self._last_step)
        for path in kept:
            if path and path not in self._logged and os.path.isfile(path):
                self._logged.add(path)
                self.experiment.log_checkpoint(str(path), step=step)

    @rank_zero_only
    @never_raises
    def finalize(self, status: str) -> None:
        """The run ends now with Lightning's status (if this logger owns it): ``failed`` with the exception
        that failed the fit when a ``LezeaCallback`` saw it (``on_exception`` comes first), so a fit whose
        exception the user catches still ends its run failed."""
        self.run.end(failed=status == "failed", source=names.SOURCE_LIGHTNING)


class LezeaCallback(Callback):
    """Each training batch's phases, validation and checkpoint saving, on every rank.

    Args:
        tracker: an ``ExperimentTracker``; None: a ``LezeaLogger``'s of the trainer, else one made like
            the logger's (``experiment_name`` and ``tracker_options``), ended at the end of the fit.
    """

    def __init__(self, experiment_name: str = "lightning", *, tracker: ExperimentTracker | None = None,
                 **tracker_options: Any) -> None:
        self._own = Run(tracker, experiment_name, "", None, tracker_options, None)
        self.run = self._own
        self._tracker: ExperimentTracker | None = None
        self._phases = Phases(names.SOURCE_LIGHTNING)
        self._profiler: Any = None
        self._failed = False
        self._save: Any = None

    @never_raises
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, LezeaLogger)]
        self.run = loggers[0].run if loggers and not self._own.made else self._own
        self._tracker = tracker = self.run.tracker(trainer.global_rank, trainer.world_size)
        save = trainer.save_checkpoint
        self._save = save
        # the trainer's profiler is an instance attribute Lightning sets without declaring it on the class
        self._profiler = trainer.profiler  # type: ignore[attr-defined]
        trainer.profiler = _DataWaits(self._profiler, self._phases, tracker)  # type: ignore[attr-defined]
        trainer.save_checkpoint = lambda path, *args, **kwargs: self._phases.around(  # type: ignore[method-assign]
            tracker, names.PHASE_CHECKPOINT, save, path, *args, **kwargs,
            **{names.CHECKPOINT_PATH: str(path)})

    @never_raises
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._begin(names.PHASE_FORWARD)

    @never_raises
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Any) -> None:
        self._begin(names.PHASE_BACKWARD)

    @never_raises
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phases.end()

    @never_raises
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Any) -> None:
        self._begin(names.PHASE_OPTIMIZER)

    @never_raises
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._phases.end()

    @never_raises
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin(names.PHASE_VALIDATION)

    @never_raises
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phases.end()

    @never_raises
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._failed = True
        self.run.error = exception
        self._phases.end(exception)

    @never_raises
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._phases.end()
        if self._profiler is not None:
            trainer.profiler, self._profiler = self._profiler, None  # type: ignore[attr-defined]
        if self._save is not None:
            del trainer.save_checkpoint  # the instance's wrapper goes; the class's method shows again
            self._save = None
        self.run.end(failed=self._failed, source=names.SOURCE_LIGHTNING)

    def _begin(self, name: str) -> None:
        if self._tracker is not None:
            self._phases.begin(self._tracker, name)


class _DataWaits(Profiler):
    """The trainer's profiler with each fetch of a training batch also timed as the ``data`` phase; every
    call goes on to the profiler it stands in front of."""

    def __init__(self, inner: Profiler, phases: Phases, tracker: ExperimentTracker) -> None:
        super().__init__()
        self._inner, self._phases, self._tracker = inner, phases, tracker

    # Lightning profiles dozens of actions a step: only the fetch's pass through a guard of ours.
    def start(self, action_name: str) -> None:
        self._inner.start(action_name)
        if action_name.endswith(_FETCH):
            self._fetch_began()

    def stop(self, action_name: str) -> None:
        if action_name.endswith(_FETCH):
            self._fetch_ended()
        self._inner.stop(action_name)

    @never_raises
    def _fetch_began(self) -> None:
        self._phases.begin(self._tracker, names.PHASE_DATA, **_DATA_WAIT)

    @never_raises
    def _fetch_ended(self) -> None:
        self._phases.end()

    def summary(self) -> str:
        return self._inner.summary()

    def describe(self) -> None:
        self._inner.describe()

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        self._inner.setup(stage, local_rank, log_dir)

    def teardown(self, stage: str | None) -> None:
        self._inner.teardown(stage)


def _rank() -> int:
    """This process's global rank as Lightning set it (``rank_zero_only.rank``)."""
    return int(getattr(rank_zero_only, "rank", 0))


def _world_size() -> int:
    """The processes of the launch, as Lightning's launcher sets them (1 outside one)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1
