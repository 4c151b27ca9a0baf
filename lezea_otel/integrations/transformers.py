"""Hugging Face Transformers: ``LezeaCallback`` for ``Trainer(callbacks=[LezeaCallback()])``.

```py
from lezea_otel.integrations.transformers import LezeaCallback
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val, callbacks=[LezeaCallback()])
```

It records the ``TrainingArguments`` as the config record (at the start of training), every ``on_log``
as values at the global step (``eval_*`` values in the ``val`` split, without their prefix; the closing
figures, ``train_runtime`` and the others, as the run's results), each
checkpoint when saved, and the phases the Trainer's callbacks can see: ``training_step`` (``on_step_begin``
to ``on_step_end``: forward, backward and the optimizer step, which the Trainer runs between two callbacks),
``optimizer`` inside it (``on_pre_optimizer_step`` to ``on_optimizer_step``), ``validation`` (from the
step end that decided to evaluate to ``on_evaluate``) and ``checkpoint`` (from the decision to save to
``on_save``). Values and the config are recorded by the main process only; phases by every process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.integrations.common import Phases, Run, log_values, missing, never_raises, plain_config
from lezea_otel.tracker import ExperimentTracker

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as error:  # pragma: no cover - the test extra installs it
    raise missing("Transformers", "transformers", error) from error

__all__ = ["LezeaCallback"]

_PREFIXES = tuple((prefix + "_", split) for prefix, split in (("eval", names.SPLIT_VAL),
                                                               ("test", names.SPLIT_TEST)))
"""The Trainer's own prefixes (``metric_key_prefix``): ``eval_loss`` is ``loss`` in ``val``; training values
have none."""
_EPOCH = ("epoch",)
_SUMMARY = "train_runtime"
"""In the dict the Trainer logs once at the end (runtime, samples/s, the mean loss): recorded as results."""


class LezeaCallback(TrainerCallback):
    """The Trainer's values, config, checkpoints and phases in a tracker's run.

    Args:
        tracker: an ``ExperimentTracker``; None makes one at the start of training (``experiment_name``,
            ``purpose``, ``tags`` and ``tracker_options``, the tracker's keyword-only arguments).
        end_run: whether the end of training ends the run; None: only a run this callback made.
    """

    def __init__(self, experiment_name: str = "transformers", purpose: str = "",
                 tags: Sequence[str] | None = None, *, tracker: ExperimentTracker | None = None,
                 end_run: bool | None = None, **tracker_options: Any) -> None:
        self.run = Run(tracker, experiment_name, purpose, tags, tracker_options, end_run)
        self._tracker: ExperimentTracker | None = None
        self._step = Phases(names.SOURCE_TRANSFORMERS)
        self._optimizer = Phases(names.SOURCE_TRANSFORMERS)
        self._after_step = Phases(names.SOURCE_TRANSFORMERS)
        self._main = True

    @never_raises
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._main = state.is_world_process_zero
        self._tracker = tracker = self.run.tracker(args.process_index, args.world_size)
        if self._main:
            tracker.log_lezea_config(hyperparameters=plain_config(args))

    @never_raises
    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        self._begin(self._step, names.PHASE_TRAINING_STEP)

    @never_raises
    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              **kwargs: Any) -> None:
        self._begin(self._optimizer, names.PHASE_OPTIMIZER)

    @never_raises
    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
        self._optimizer.end()

    @never_raises
    def on_substep_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._step.end()  # a micro-batch of gradient accumulation: its own phase

    @never_raises
    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self._optimizer.end()
        self._step.end()
        self._after(control)

    @never_raises
    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._after(control)

    @never_raises
    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self._after_step.end()
        if control.should_save:
            self._begin(self._after_step, names.PHASE_CHECKPOINT)

    @never_raises
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        self._after_step.end()
        folder = os.path.join(args.output_dir or "", f"checkpoint-{state.global_step}")
        if self._main and self._tracker is not None and os.path.isdir(folder):
            self._tracker.log_checkpoint(folder, step=state.global_step)

    @never_raises
    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not self._main or self._tracker is None or not logs:
            return
        if _SUMMARY in logs:  # the Trainer's closing figures, logged once: the run's results, not a step
            self._tracker.log_results(result_dict=dict(logs), step=state.global_step)
        else:
            log_values(self._tracker, state.global_step, logs, _EPOCH, _PREFIXES)

    @never_raises
    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        for phases in (self._optimizer, self._step, self._after_step):
            phases.end()
        self.run.end()

    def _after(self, control: TrainerControl) -> None:
        """What the Trainer does after a step or an epoch, as the flow callback has just decided it:
        evaluate (then perhaps save, see ``on_evaluate``), or save."""
        if control.should_evaluate:
            self._begin(self._after_step, names.PHASE_VALIDATION)
        elif control.should_save:
            self._begin(self._after_step, names.PHASE_CHECKPOINT)

    def _begin(self, phases: Phases, name: str) -> None:
        if self._tracker is not None:
            phases.begin(self._tracker, name)
