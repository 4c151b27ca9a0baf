"""Accelerate: ``LezeaTracker``, a ``GeneralTracker`` for ``Accelerator(log_with=[LezeaTracker(...)])``.

```py
from lezea_otel.integrations.accelerate import LezeaTracker
accelerator = Accelerator(log_with=[LezeaTracker("run")])
accelerator.init_trackers("project", config={"lr": 3e-4})    # the config record
accelerator.log({"loss": loss.item()}, step=step)              # values (val_* ones in the val split)
accelerator.end_training()                                     # ends a run this tracker made
```

An Accelerate script is a plain PyTorch loop: for its phases, ``tracker.watch(model, optimizer)`` on what
``accelerator.prepare`` returned (``accelerator.get_tracker("lezea", unwrap=True)`` is the tracker).
Main process only, as Accelerate's trackers are, unless ``main_process_only=False``: then every rank
records, each into its own rank folder of the one experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lezea_otel.integrations.common import Run, log_values, missing, never_raises, plain_config
from lezea_otel.tracker import ExperimentTracker

try:
    from accelerate.tracking import GeneralTracker  # type: ignore[import-untyped]  # Accelerate ships no types
except ImportError as error:  # pragma: no cover - the test extra installs it
    raise missing("Accelerate", "accelerate", error) from error

__all__ = ["LezeaTracker"]


class LezeaTracker(GeneralTracker):  # type: ignore[misc]  # untyped base class
    """Accelerate's config and values in a tracker's run.

    Args:
        tracker: an ``ExperimentTracker``; None makes one when Accelerate starts its trackers
            (``experiment_name``, ``purpose``, ``tags`` and ``tracker_options``, the tracker's keyword-only
            arguments).
        main_process_only: Accelerate's switch: False records on every process.
        end_run: whether ``end_training`` ends the run; None: only a run this tracker made.
    """

    name = "lezea"
    requires_logging_directory = False

    def __init__(self, experiment_name: str = "accelerate", purpose: str = "",
                 tags: Sequence[str] | None = None, *, tracker: ExperimentTracker | None = None,
                 main_process_only: bool = True, end_run: bool | None = None,
                 **tracker_options: Any) -> None:
        super().__init__()
        self.main_process_only = main_process_only
        self._arguments = (tracker, experiment_name, purpose, tags, tracker_options, end_run)
        self._run: Run | None = None

    @property
    def tracker(self) -> ExperimentTracker:
        """The run's ``ExperimentTracker`` (made now if Accelerate has not started this tracker yet)."""
        return self._started().tracker(*_rank())

    @never_raises
    def start(self) -> None:
        self.tracker  # noqa: B018 - made where Accelerate's state knows the rank

    @never_raises
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """``init_trackers(config=...)``: the run's config record."""
        self.tracker.log_lezea_config(hyperparameters=plain_config(values))

    @never_raises
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Values at ``step`` (0 when Accelerate gives none); ``val_``/``eval_`` ones in ``val``."""
        log_values(self.tracker, step, values)

    @never_raises
    def finish(self) -> None:
        """``end_training()``: ends the run if this tracker made it (or ``end_run=True``)."""
        if self._run is not None:
            self._run.end()

    def _started(self) -> Run:
        if self._run is None:
            given, experiment_name, purpose, tags, options, end_run = self._arguments
            self._run = Run(given, experiment_name, purpose, tags, options, end_run)
        return self._run


def _rank() -> tuple[int, int]:
    """(process index, number of processes) as Accelerate's state knows them; (0, 1) without one."""
    from accelerate.state import PartialState  # type: ignore[import-untyped]

    state = PartialState()
    return state.process_index, state.num_processes
