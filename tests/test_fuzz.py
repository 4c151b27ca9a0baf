"""A hostile and sloppy user: every public call, one bad argument at a time and in random sequences.

Whatever goes in, no call raises (internal errors raise under ``LEZEA_RAISE_INTERNAL=1``, which the
suite sets), no warning calls it an internal error, the audit parses with every line in order, the
summary and the data are JSON, and ``lezea-otel runs/show/report`` work on the run.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lezea_otel import ExperimentTracker
from lezea_otel.cli import main as cli_main
from lezea_otel.testing import Capture

from .hostile import BadFloat, BadInt, Raising, failing_generator

FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def _cyclic_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {"a": 1.0}
    mapping["self"] = mapping
    return mapping


ODD = [
    lambda: Raising(), lambda: BadFloat(0.5), lambda: BadInt(3), failing_generator, _cyclic_list,
    _cyclic_dict,
    lambda: np.float64(0.5), lambda: np.float32(1.5), lambda: np.int64(7), lambda: np.uint8(200),
    lambda: np.bool_(True), lambda: np.float16(2.0), lambda: np.array(3.0), lambda: np.array([1, 2, 3]),
    lambda: np.zeros((2, 2)), lambda: np.array(["a", "b"]), lambda: torch.tensor(0.25),
    lambda: torch.tensor([1, 2]),
    lambda: torch.tensor(5, dtype=torch.int64), lambda: torch.tensor(1.0, dtype=torch.bfloat16),
    lambda: torch.nn.Parameter(torch.ones(2)), lambda: object(), lambda: b"bytes\xff",
    lambda: bytearray(b"x"),
    lambda: {1, 2}, lambda: (1, "a"), lambda: range(3), lambda: "\ud800lone",
    lambda: "[/bold] markup", lambda: "NaN", lambda: "Infinity",
    lambda: "x" * 200_000, lambda: 2**70, lambda: -(2**70), lambda: 1e20, lambda: 10**400,
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63 - 2, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=8),
    st.sampled_from(["", "\ud800", "\udcff name", "NaN", "-Infinity", "loss", "train", "[/bold]", "[red]x",
                     "tasker:a:"]),
)
odd = st.sampled_from(ODD).map(lambda make: make())
leaf = st.one_of(scalars, odd)
garbage = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), inner, max_size=4)),
    max_leaves=8,
)

CALLS = [name for name, member in inspect.getmembers(ExperimentTracker, inspect.isfunction)
         if not name.startswith("_") and name not in ("start", "finalize_experiment", "end")]
SCOPES = ("builder_scope", "tasker_scope", "algorithm_scope", "network_scope", "layer_scope", "span")


def _parameters(name: str) -> list[str]:
    signature = inspect.signature(getattr(ExperimentTracker, name))
    return [p.name for p in list(signature.parameters.values())[1:] if p.kind is not p.VAR_KEYWORD]


@st.composite
def call_arguments(draw: st.DrawFn, name: str) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments: the right names with garbage, too many, or a typo."""
    parameters = _parameters(name)
    shape = draw(st.sampled_from(["positional", "keywords", "too_many", "typo", "none"]))
    if shape == "none":
        return [], {}
    if shape == "positional":
        count = draw(st.integers(0, len(parameters)))
        return [draw(garbage) for _ in range(count)], {}
    if shape == "too_many":
        return [draw(garbage) for _ in range(len(parameters) + 2)], {}
    chosen = draw(st.lists(st.sampled_from(parameters), unique=True)) if parameters else []
    keywords = {key: draw(garbage) for key in chosen}
    if shape == "typo":
        keywords[(chosen[0] if chosen else "value") + "_typo"] = draw(garbage)
    return [], keywords


def _invoke(tracker: ExperimentTracker, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    result = getattr(tracker, name)(*args, **kwargs)
    if name in SCOPES:
        with result:
            tracker.log_training_step(1, {"loss": 0.5})


def _check_run(tracker: ExperimentTracker, messages: list[str], cli: bool) -> None:
    """What every fuzzed run must still be: parseable, complete, JSON, readable by the CLI."""
    summary = tracker.finalize_experiment()
    assert isinstance(summary, dict)
    json.dumps(summary, default=None)
    json.dumps(tracker.get_experiment_data(), default=None)
    assert not [m for m in messages if "internal error" in m], messages
    lines = Path(tracker.audit_path).read_bytes().splitlines()
    events = [orjson.loads(line) for line in lines]  # every line parses
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["kind"] for e in events]  # calls after finalize still reach the audit, after its end
    assert kinds[0] == "experiment_start" and kinds.count("experiment_end") == 1
    assert summary["signals"]["audit_lines"] == len(events)
    if not cli:
        return
    runs_dir = str(Path(tracker.run_dir).parent)
    runner = CliRunner()
    for command in (["runs", runs_dir], ["show", tracker.experiment_id, "--runs-dir", runs_dir],
                    ["report", tracker.experiment_id, "--runs-dir", runs_dir, "-o",
                     str(Path(tracker.run_dir) / "report.html")]):
        result = runner.invoke(cli_main, command, catch_exceptions=True)
        assert result.exit_code == 0, (command, result.output, result.exception)


@contextlib.contextmanager
def _warnings() -> Iterator[list[str]]:
    """The ``lezea_otel`` warnings of one hypothesis example (caplog spans all examples of a test)."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("lezea_otel")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("name", CALLS)
@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(draws=st.data())
def test_every_call_survives_garbage(name: str, async_mode: bool, tmp_path_factory,
                                     draws: st.DataObject) -> None:
    """One public call, a run of garbage argument lists: nothing raises, the run stays whole."""
    with _warnings() as messages:
        tracker = Capture(tmp_path_factory.mktemp("fuzz")).tracker("fuzz", auto_start=True,
                                                                   async_mode=async_mode)
        for _ in range(6):
            args, kwargs = draws.draw(call_arguments(name))
            _invoke(tracker, name, args, kwargs)
        _check_run(tracker, messages, cli=False)


def test_the_cli_reads_a_fuzzed_run(tmp_path) -> None:
    """One run holding every kind of garbage at every call: ``runs``, ``show`` and ``report`` still work."""
    import random

    with _warnings() as messages:
        tracker = Capture(tmp_path / "runs").tracker("fuzzed", auto_start=True)
        rng = random.Random(7)
        for name in CALLS:
            for make in ODD:
                args = [make() for _ in range(rng.randint(0, len(_parameters(name))))]
                _invoke(tracker, name, args, {})
        _check_run(tracker, messages, cli=True)


@FUZZ
@given(args=st.lists(garbage, max_size=7), kwargs=st.dictionaries(
    st.sampled_from(["purpose", "tags", "auto_start", "async_mode", "service_name", "quiet", "cost_limit_eur",
                     "extra_exporters", "unknown_keyword"]), garbage, max_size=4))
def test_constructor_never_raises(tmp_path_factory, monkeypatch, args: list[Any],
                                  kwargs: dict[str, Any]) -> None:
    """``ExperimentTracker(<anything>)`` gives a working tracker, one warning per problem."""
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")  # a truthy garbage auto_start must not bind port 8000
    with _warnings() as messages:
        tracker = ExperimentTracker(*args, runs_dir=tmp_path_factory.mktemp("ctor"), **kwargs)
        tracker.log_training_step(1, {"loss": 0.5})
        _check_run(tracker, messages, cli=False)


@FUZZ
@given(names=st.lists(st.sampled_from([*CALLS, "finalize_experiment", "start"]), min_size=1, max_size=25),
       async_mode=st.booleans(), draws=st.data())
def test_random_call_sequences(tmp_path_factory, names: list[str], async_mode: bool,
                               draws: st.DataObject) -> None:
    """Random orders (calls after finalize, start twice, nested scopes) with garbage arguments."""
    with _warnings() as messages:
        tracker = Capture(tmp_path_factory.mktemp("seq")).tracker("sequence", auto_start=True,
                                                                  async_mode=async_mode)
        for name in names:
            args, kwargs = draws.draw(call_arguments(name)) if name in CALLS else ([], {})
            _invoke(tracker, name, args, kwargs)
        _check_run(tracker, messages, cli=False)


def test_numpy_and_torch_values_are_numbers(tracker) -> None:
    """The values numpy and torch hand back (``np.mean``, ``loss.item()``, 0-d tensors) read back as
    numbers."""
    tracker.log_training_step(1, {"loss": np.float64(0.5), "acc": np.float32(0.25), "n": np.int64(3),
                                  "t": torch.tensor(0.125)})
    tracker.log_reward("a", np.float64(0.7))
    tracker.finalize_experiment()
    history = tracker.get_experiment_data()["metrics"]
    assert history["loss"] == [[1, 0.5]] and history["acc"] == [[1, 0.25]]
    assert history["n"] == [[1, 3]] and history["t"] == [[1, 0.125]]
    assert all(isinstance(v, (int, float)) and not math.isnan(v) for key in history for _, v in history[key])
