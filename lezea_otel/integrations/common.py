"""What every integration does alike: the tracker it was given or one it makes (per rank, under a launcher
of its framework's own), the framework's value names split into the tracker's splits, and the one error a
missing framework gives. Of the package, the facade, the settings' table (which variables a rank reads) and
the internal-error report are used here."""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from lezea_otel import semconv as names
from lezea_otel.config.parameters import BY_NAME
from lezea_otel.tracker import ExperimentTracker
from lezea_otel.util.safety import report_internal_error

PREFIXES: tuple[tuple[str, str], ...] = tuple(
    (prefix + separator, split)
    for prefix, split in (("train", names.SPLIT_TRAIN), ("validation", names.SPLIT_VAL),
                          ("valid", names.SPLIT_VAL), ("val", names.SPLIT_VAL), ("eval", names.SPLIT_VAL),
                          ("test", names.SPLIT_TEST))
    for separator in ("_", "/"))
"""A framework's value names by split (``val_loss``, ``eval_loss``, ``train/loss``): the split becomes the
tracker's ``data_split`` and the prefix goes, so ``val_loss`` is ``loss`` in ``val``, as the tracker's own
loop would log it."""
F = TypeVar("F", bound=Callable[..., Any])
_RUN_NAMESPACE = uuid.UUID("0c6b1a52-4d7e-5f21-8a3c-2b9e7d1f4a60")


def missing(framework: str, extra: str, error: ImportError) -> ImportError:
    """The error an integration's import raises when its framework is not installed."""
    return ImportError(f"lezea_otel.integrations.{extra} needs {framework}, which is not installed "
                       f"({error}); install it with: pip install 'lezea_otel[{extra}]'")


def never_raises(function: F) -> F:
    """A framework hook of an integration: an error of ours costs telemetry, never the training; one
    warning per hook and error type (raised under ``LEZEA_RAISE_INTERNAL=1``, as the facade's are)."""

    @functools.wraps(function)
    def hook(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - reported once (raised under LEZEA_RAISE_INTERNAL=1)
            report_internal_error(function.__qualname__, error)
            return None

    return hook  # type: ignore[return-value]


def split_values(values: Mapping[str, Any], skip: Sequence[str] = (),
                 prefixes: Sequence[tuple[str, str]] = PREFIXES) -> dict[str | None, dict[str, Any]]:
    """``{split: {key: value}}`` (``None``: training values without a prefix); ``skip``: keys that are no
    values (``epoch``, which the frameworks add to every dict, kept only beside training values);
    ``prefixes``: (prefix, split) pairs, ``PREFIXES`` unless the framework names its splits otherwise."""
    found: dict[str | None, dict[str, Any]] = {}
    for key, value in values.items():
        if key in skip:
            continue
        split, name = None, key
        for prefix, named in prefixes:
            if key.startswith(prefix) and len(key) > len(prefix):
                split, name = (None if named == names.SPLIT_TRAIN else named), key[len(prefix):]
                break
        found.setdefault(split, {})[name] = value
    for key in skip:
        if key in values and None in found:
            found[None][key] = values[key]
    return found


def log_values(tracker: ExperimentTracker, step: int | None, values: Mapping[str, Any],
               skip: Sequence[str] = (), prefixes: Sequence[tuple[str, str]] = PREFIXES) -> None:
    for split, metrics in split_values(values, skip, prefixes).items():
        tracker.log_training_step(step if step is not None else 0, metrics, data_split=split)


def plain_config(config: Any) -> dict[str, Any]:
    """A framework's hyperparameters (a mapping, a ``Namespace``, a dataclass's ``to_dict()``) as a dict."""
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    return dict(vars(config)) if hasattr(config, "__dict__") else {"value": config}


class Run:
    """The tracker an integration records to: the one given, or one made when first needed (after the
    framework has launched its ranks, so each rank knows who it is); ended by the integration only when it
    made it, or when asked to (``end_run``)."""

    def __init__(self, tracker: ExperimentTracker | None, experiment_name: str, purpose: str,
                 tags: Sequence[str] | None, options: Mapping[str, Any], end_run: bool | None) -> None:
        self._given = tracker
        self._made: ExperimentTracker | None = None
        self._arguments = (experiment_name, purpose, tags, dict(options))
        self._end_run = end_run
        self.experiment_name = tracker.experiment_name if tracker is not None else experiment_name
        self.error: BaseException | None = None
        """The exception that failed the training, as a callback of the integration saw it."""

    @property
    def made(self) -> bool:
        return self._made is not None

    def tracker(self, rank: int = 0, world_size: int = 1) -> ExperimentTracker:
        """The run's tracker; a rank of ``world_size > 1`` launched by its framework (no launcher variable
        set) gets a rank identity and the experiment every rank derives alike (see ``rank_identity``)."""
        if self._given is not None:
            return self._given
        if self._made is None:
            name, purpose, tags, options = self._arguments
            with rank_identity(name, rank, world_size):
                self._made = ExperimentTracker(name, purpose, tags, auto_start=True, **options)
        return self._made

    def end(self, failed: bool = False, source: str = "") -> None:
        """End the run if this integration owns it: ``failed`` (the framework says the training failed)
        with the exception a callback saw (``error``), else one naming ``source``, the framework; the
        exception the framework then raises finds the run ended already."""
        owned = self._end_run if self._end_run is not None else self._made is not None
        tracker = self._made or self._given
        if not owned or tracker is None:
            return
        if failed:
            error = self.error or RuntimeError(f"{source or 'the framework'} reported the training failed")
            tracker._end_failed(error, source or "integration")
        else:
            tracker.finalize_experiment()


@contextlib.contextmanager
def rank_identity(experiment_name: str, rank: int, world_size: int) -> Iterator[None]:
    """While a rank's tracker is made: the variables of a launcher of ours, for a framework that launches
    its ranks itself (Lightning's DDP sets ``LOCAL_RANK``/``WORLD_SIZE`` and its rendezvous address, none
    of which tells an experiment apart). Every rank of the launch shares the rendezvous address and port, so
    each derives the same experiment id (and so the same trace) from them. Unchanged under torchrun, SLURM
    or MPI, whose variables say it already."""
    # the settings' own variables (the declared table): the first of each is ours (LEZEA_*)
    rank_variables = BY_NAME["rank"].variables_for()
    if world_size <= 1 or any(variable in os.environ for variable in rank_variables):
        yield
        return
    rendezvous = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
    given = {rank_variables[0]: str(rank), BY_NAME["world_size"].variables_for()[0]: str(world_size)}
    experiment_variable = BY_NAME["experiment_id"].variables_for()[0]
    if experiment_variable not in os.environ:
        derived = uuid.uuid5(_RUN_NAMESPACE, f"{rendezvous}/{experiment_name}")
        given[experiment_variable] = str(derived)
    before = {variable: os.environ.get(variable) for variable in given}
    os.environ.update(given)
    try:
        yield
    finally:
        for variable, value in before.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


class Phases:
    """Phases opened and closed at a framework's hooks, one at a time: each ``begin`` ends the phase still
    open (a hook that never came cannot leave one behind), ``end(error)`` records the exception that
    ended it."""

    def __init__(self, source: str) -> None:
        self._attributes = {names.PHASE_SOURCE: source}
        self._open: Any = None

    def begin(self, tracker: ExperimentTracker, name: str, **attributes: Any) -> None:
        self.end()
        block = tracker.span(name, **self._attributes, **attributes)
        block.__enter__()
        self._open = block

    def end(self, error: BaseException | None = None) -> None:
        block, self._open = self._open, None
        if block is not None:
            block.__exit__(type(error) if error is not None else None, error,
                           error.__traceback__ if error is not None else None)

    def around(self, tracker: ExperimentTracker, name: str, call: Callable[..., Any], *args: Any,
               **attributes: Any) -> Any:
        """``call(*args)`` as the phase ``name`` (nested under the one open, which stays open)."""
        with tracker.span(name, **self._attributes, **attributes):
            return call(*args)
