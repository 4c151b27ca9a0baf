"""Safety: bad input and misuse never raise into training code.

Each distinct problem is one warning naming the call (however often it repeats), and whatever
was valid in the same call is still recorded.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lezea_otel import ExperimentTracker


class FakeTensor:
    """Shaped like a torch 0-d tensor: ``.item()``, ``.shape == ()``, ``.ndim == 0``, ``.dim()``."""

    def __init__(self, value: float) -> None:
        self._value = value
        self.shape = ()
        self.ndim = 0
        self.requires_grad = True

    def item(self) -> float:
        return self._value

    def dim(self) -> int:
        return 0


def audit_events(tracker: ExperimentTracker, kind: str | None = None) -> list[dict[str, Any]]:
    """The raw audit lines, as written (``get_experiment_data`` flushes the buffer first)."""
    tracker.get_experiment_data()
    events = [json.loads(line) for line in tracker.audit_path.read_text().splitlines()]
    return [e for e in events if kind is None or e["kind"] == kind]


@pytest.fixture(autouse=True)
def _no_default_prometheus_port(monkeypatch):
    """An implicit start() must not try port 8000 here (a busy 8000 would add a warning)."""
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")


class TestBadMetrics:
    @pytest.mark.parametrize(("metrics", "kept", "problem"), [
        (None, {}, "metrics must be a dict"),
        ({"loss": "0.5", "acc": 0.75}, {"acc": 0.75}, "value for 'loss' is not a number"),
        ({"loss": [0.1, 0.2], "acc": 0.75}, {"acc": 0.75}, "value for 'loss' is not a number"),
        ({"opt": {"lr": 0.01}, "acc": 0.75}, {"opt.lr": 0.01, "acc": 0.75}, "nested dicts are flattened"),
        ({7: 0.25, "acc": 0.75}, {"7": 0.25, "acc": 0.75}, "keys must be strings"),
        ({(1, 2): 0.25, "acc": 0.75}, {"(1, 2)": 0.25, "acc": 0.75}, "keys must be strings"),
    ], ids=["none", "str-value", "list-value", "nested", "int-key", "tuple-key"])
    def test_repeated_bad_metrics_warn_once_and_keep_valid_keys(
            self, tracker, capture, lezea_warnings, metrics, kept, problem):
        """100 identical bad calls: no exception, one warning naming the call, valid keys recorded."""
        for step in range(1, 101):
            tracker.log_training_step(step, metrics)
        messages = lezea_warnings()
        assert len(messages) == 1, messages
        assert "log_training_step" in messages[0] and problem in messages[0]
        steps = audit_events(tracker, "training_step")
        assert [e["step"] for e in steps] == list(range(1, 101))
        assert all(e["data"].get("metrics", {}) == kept for e in steps)
        if "acc" in kept:
            assert [p.value for p in capture.points("lezea.training.acc")] == [0.75]
            assert tracker.get_experiment_summary()["metrics"]["acc"]["count"] == 100

    def test_nan_and_inf_are_recorded_with_one_warning_each(self, tracker, capture, lezea_warnings):
        """A diverging loss is kept: audit "NaN"/"Infinity", counted in the summary, one warning each."""
        tracker.log_training_step(0, {"loss": 2.0})
        for step in range(1, 101):
            tracker.log_training_step(step, {"loss": math.nan, "grad_norm": math.inf, "acc": 0.5})
        messages = lezea_warnings()
        assert len(messages) == 2, messages
        assert all("log_training_step" in m for m in messages)
        assert any("'loss' is NaN" in m for m in messages)
        assert any("'grad_norm' is Infinity" in m for m in messages)
        last = audit_events(tracker, "training_step")[-1]["data"]["metrics"]
        assert (last["loss"], last["grad_norm"], last["acc"]) == ("NaN", "Infinity", 0.5)
        stats = tracker.get_experiment_summary()["metrics"]
        assert stats["loss"]["nonfinite"] == 100 and stats["loss"]["first_nonfinite_step"] == 1
        assert stats["loss"]["best"] == 2.0 and stats["grad_norm"]["nonfinite"] == 100
        assert stats["acc"]["count"] == 100 and stats["acc"]["nonfinite"] == 0
        assert math.isnan(tracker.get_experiment_data()["metrics"]["loss"][-1][1])

    def test_numpy_scalars_are_numbers(self, tracker, capture, lezea_warnings):
        """np.float32, np.int64 and a 0-d np.array are plain numbers: no warning, exact values."""
        tracker.log_training_step(1, {"loss": np.float32(0.5), "count": np.int64(3), "lr": np.array(2.0)})
        assert lezea_warnings() == []
        (event,) = audit_events(tracker, "training_step")
        assert event["data"]["metrics"] == {"loss": 0.5, "count": 3.0, "lr": 2.0}
        assert [p.value for p in capture.points("lezea.training.count")] == [3.0]

    def test_numpy_step_is_an_integer_step(self, tracker, lezea_warnings):
        """A numpy integer step (from np.arange) is taken as that step, silently."""
        for step in np.arange(1, 4):
            tracker.log_training_step(step, {"loss": 1.0})
        assert lezea_warnings() == []
        assert [e["step"] for e in audit_events(tracker, "training_step")] == [1, 2, 3]

    def test_torch_like_zero_d_tensor_is_a_number(self, tracker, capture, lezea_warnings):
        """loss.detach() style 0-d tensors need no .item() from the user."""
        tracker.log_training_step(1, {"loss": FakeTensor(0.25)})
        tracker.log_training_step(2, {"loss": FakeTensor(0.125)})
        assert lezea_warnings() == []
        assert [e["data"]["metrics"] for e in audit_events(tracker, "training_step")] == [
            {"loss": 0.25}, {"loss": 0.125, "delta_loss": -0.125}]
        assert [p.value for p in capture.points("lezea.training.loss")] == [0.125]


class TestBadSteps:
    def test_negative_steps_warn_once_and_are_recorded_as_given(self, tracker, lezea_warnings):
        """Negative steps (increasing) give one 'negative' warning; each step is recorded as given."""
        for step in range(-100, 0):
            tracker.log_training_step(step, {"loss": 0.5})
        messages = lezea_warnings()
        assert len(messages) == 1, messages
        assert "log_training_step" in messages[0] and "negative" in messages[0]
        assert [e["step"] for e in audit_events(tracker, "training_step")] == list(range(-100, 0))

    def test_repeated_step_warns_once_and_records_every_call(self, tracker, lezea_warnings):
        """The same step 100 times: one 'did not increase' warning, 100 records with their values."""
        for i in range(100):
            tracker.log_training_step(7, {"loss": float(i)})
        messages = lezea_warnings()
        assert len(messages) == 1 and "log_training_step" in messages[0], messages
        assert "step did not increase" in messages[0]
        events = audit_events(tracker, "training_step")
        assert len(events) == 100 and all(e["step"] == 7 for e in events)
        assert events[-1]["data"]["metrics"]["loss"] == 99.0

    def test_float_step_warns_once_and_keeps_the_values(self, tracker, lezea_warnings):
        """step=3.5 is not a step: one warning, the values are recorded without a step."""
        for _ in range(100):
            tracker.log_training_step(3.5, {"loss": 0.5})
        messages = lezea_warnings()
        assert len(messages) == 1 and "log_training_step" in messages[0], messages
        assert "step must be an integer" in messages[0]
        events = audit_events(tracker, "training_step")
        assert len(events) == 100
        assert all(e["step"] is None and e["data"]["metrics"]["loss"] == 0.5 for e in events)


class TestHugeInput:
    def test_hundred_thousand_sample_ids(self, tracker, lezea_warnings):
        """100k ids to log_data_usage: the audit keeps 10,000, the count and a sha256 of all; one warning."""
        ids = [f"sample-{i}" for i in range(100_000)]
        tracker.log_data_usage(ids, epoch=2)
        messages = lezea_warnings()
        assert len(messages) == 1 and "log_data_usage" in messages[0], messages
        (usage,) = audit_events(tracker, "data_usage")
        assert usage["data"]["count"] == 100_000 and usage["data"]["truncated"] is True
        assert usage["data"]["sample_ids"] == ids[:10_000]
        assert usage["data"]["sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
        assert usage["data"]["epoch"] == 2
        assert tracker.get_experiment_summary()["data"]["samples_used"] == 100_000


class TestLifecycleMisuse:
    def test_call_before_start_auto_starts(self, capture, lezea_warnings):
        """log_training_step before start(): one warning saying so, the run starts and records everything."""
        tracker = capture.tracker("early")
        for step in range(1, 101):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        messages = lezea_warnings()
        assert len(messages) == 1, messages
        assert "log_training_step" in messages[0] and "before start()" in messages[0]
        summary = tracker.finalize_experiment()
        assert summary["steps"]["count"] == 100 and summary["status"] == "finished"
        assert len(capture.spans("experiment")) == 1
        kinds = [e["kind"] for e in audit_events(tracker)]
        assert kinds[:3] == ["experiment_start", "environment", "training_step"]

    @pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async"])
    def test_call_after_finalize_still_reaches_the_audit(self, capture, lezea_warnings, async_mode):
        """After finalize a call is written to events.jsonl; one warning says it went to the audit only."""
        tracker = capture.tracker("late", auto_start=True, async_mode=async_mode)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        for step in range(2, 102):
            tracker.log_training_step(step, {"loss": 0.25})
        tracker.log_comment("afterthought")
        messages = lezea_warnings()
        late = [m for m in messages if m.startswith("log_training_step")]
        assert len(late) == 1 and "after finalize" in late[0] and "audit" in late[0], messages
        # Read the file as is: the process could exit right now, so the lines must already be there.
        events = [json.loads(x) for x in tracker.audit_path.read_text().splitlines()]
        steps = [e["step"] for e in events if e["kind"] == "training_step"]
        assert steps == list(range(1, 102))
        assert events[-1]["kind"] == "comment" and events[-1]["data"] == {"text": "afterthought"}

    def test_unwritable_runs_dir_falls_back_with_one_warning(self, capture, tmp_path, lezea_warnings):
        """runs_dir under a regular file: one warning, and the audit is written elsewhere."""
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        tracker = capture.tracker("fallback", runs_dir=blocker / "runs", auto_start=True)
        try:
            tracker.log_training_step(1, {"loss": 0.5})
            summary = tracker.finalize_experiment()
            messages = lezea_warnings()
            assert len(messages) == 1 and "not writable" in messages[0], messages
            assert not str(tracker.audit_path).startswith(str(blocker))
            assert tracker.audit_path.is_file()
            assert [e["kind"] for e in audit_events(tracker, "training_step")] == ["training_step"]
            assert summary["steps"]["count"] == 1
        finally:
            shutil.rmtree(tracker.run_dir, ignore_errors=True)


class TestUserExceptions:
    @pytest.mark.parametrize("scope", ["builder_scope", "tasker_scope", "algorithm_scope", "network_scope",
                                       "layer_scope", "span"])
    def test_user_exception_in_a_scope_propagates(self, capture, monkeypatch, scope):
        """The user's own exception inside a scope or phase comes out unchanged, and is marked on the span."""
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        tracker = capture.tracker("boom", auto_start=True)
        error = KeyError("mine")
        with pytest.raises(KeyError) as raised, getattr(tracker, scope)("x1"):
            raise error
        assert raised.value is error
        summary = tracker.finalize_experiment()
        span = next(s for s in capture.spans() if s.name not in ("experiment", "experiment.started"))
        assert not span.status.is_ok and span.status.status_code.name == "ERROR"
        assert summary["status"] == "finished"

    def test_user_exception_in_a_decorated_phase_propagates(self, capture, monkeypatch):
        """@tracker.span("forward") re-raises the function's exception unchanged."""
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        tracker = capture.tracker("boom", auto_start=True)

        @tracker.span("forward")
        def forward() -> None:
            raise ZeroDivisionError("user bug")

        with pytest.raises(ZeroDivisionError, match="user bug"):
            forward()
        tracker.finalize_experiment()
        assert capture.spans("forward")[0].status.status_code.name == "ERROR"


_GARBAGE: tuple[Any, ...] = (object(), None, "x", -1, math.nan, [1, {2: 3}], {"a": object(), 5: None},
                             b"bytes", 10**30, {1, 2}, FakeTensor(math.inf), lambda: 0)
_ARG_SETS: tuple[tuple[Any, ...], ...] = (
    (),                      # too few arguments (for most calls)
    _GARBAGE[:1], _GARBAGE[1:2], _GARBAGE[2:3], _GARBAGE[4:5], _GARBAGE[5:6], _GARBAGE[6:7], _GARBAGE[10:11],
    _GARBAGE[:2], _GARBAGE[2:4], _GARBAGE[4:6], _GARBAGE[6:9],
    _GARBAGE,                # far too many arguments
)
_PUBLIC = sorted(name for name, value in inspect.getmembers(ExperimentTracker)
                 if not name.startswith("_") and callable(value))


def _use(result: Any) -> None:
    """Use what a call returned the way training code would (a scope in a ``with`` block)."""
    if hasattr(result, "__enter__"):
        with result:
            pass


class TestGarbageNeverRaises:
    def test_every_public_method_is_covered(self):
        """The garbage sweep below sees every public method (the spec calls at least)."""
        assert {"start", "finalize_experiment", "end", "log_training_step", "builder_scope", "network_scope",
                "span", "get_experiment_summary", "log_business_metrics"} <= set(_PUBLIC)

    @pytest.mark.parametrize("method", _PUBLIC)
    def test_wrong_types_and_arity_never_raise(self, capture, monkeypatch, method):
        """Any public method called with wrong types, too few or too many arguments returns normally."""
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        tracker = capture.tracker("garbage", auto_start=True)
        failures = []
        for args in _ARG_SETS:
            for kwargs in ({}, {"bogus_keyword": object()}):
                try:
                    _use(getattr(tracker, method)(*args, **kwargs))
                except Exception as error:  # noqa: BLE001 - collected, then asserted
                    shown = ", ".join([type(a).__name__ for a in args] + [f"{k}=..." for k in kwargs])
                    failures.append(f"{method}({shown}) raised {type(error).__name__}: {error}")
        assert not failures, f"{len(failures)} calls raised, e.g.:\n" + "\n".join(failures[:4])
        # the tracker is still usable (or already finalized, when the method was finalize/end)
        tracker.log_training_step(10**6, {"loss": 0.5})
        summary = tracker.finalize_experiment()
        assert isinstance(summary, dict) and summary["steps"]["count"] >= 1

    def test_network_scope_with_an_unknown_network_type(self, capture, lezea_warnings):
        """network_scope(id, network_type="bogus"): one warning, the scope still opens, nothing raises."""
        tracker = capture.tracker("net", auto_start=True)
        for step in range(1, 101):
            with tracker.network_scope("n1", network_type="bogus"):
                tracker.log_training_step(step, {"loss": 0.5})
        tracker.finalize_experiment()
        messages = lezea_warnings()
        assert len(messages) == 1, messages
        assert messages[0].startswith("network_scope") and "bogus" in messages[0]
        assert {e["scope"] for e in audit_events(tracker, "training_step")} == {"network:n1"}
        assert len(capture.spans("network")) == 100

    def test_wrong_arity_in_a_loop_warns_once(self, capture, monkeypatch, lezea_warnings):
        """The same wrong-arity call 100 times is one warning naming the call, not 100."""
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        tracker = capture.tracker("arity", auto_start=True)
        for _ in range(100):
            tracker.log_training_step()  # type: ignore[call-arg]
        messages = lezea_warnings()
        assert len(messages) == 1 and "log_training_step" in messages[0], messages
        tracker.finalize_experiment()

    @pytest.mark.parametrize("kwargs", [
        {"runs_dir": 3}, {"service_name": 4}, {"endpoint": 5}, {"protocol": [1]}, {"quiet": "maybe"},
        {"cost_limit_eur": "x"}, {"extra_exporters": 5}, {"extra_exporters": [object()]},
    ], ids=lambda kw: next(iter(kw)) + "=" + type(next(iter(kw.values()))).__name__)
    def test_construction_with_garbage_never_raises(self, tmp_path, monkeypatch, kwargs):
        """ExperimentTracker(...) with wrong-typed options still gives a working tracker."""
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        tracker = ExperimentTracker(None, 5, 3.2, "yes", [], **{"runs_dir": tmp_path / "runs", **kwargs})
        tracker.log_training_step(1, {"loss": 0.5})
        summary = tracker.finalize_experiment()
        assert summary is not None and summary["steps"]["count"] == 1
        assert Path(tracker.audit_path).is_file()


class _Untruthy:
    """A value whose truth cannot be told (``__bool__`` raises, as a numpy array's or a proxy's does)."""

    def __bool__(self) -> bool:
        raise ValueError("the truth value is ambiguous")


class _Unsized:
    """Falls back to ``__len__`` for its truth, which raises."""

    def __len__(self) -> int:
        raise TypeError("no length")


@pytest.mark.parametrize("strict", [_Untruthy(), _Unsized()], ids=["bool", "len"])
def test_start_with_a_strict_value_of_no_truth_warns_once_and_starts(capture, lezea_warnings, strict):
    tracker = capture.tracker("strict")
    assert tracker.start(strict=strict, prometheus_port=None) is tracker
    messages = lezea_warnings()
    assert len(messages) == 1 and messages[0].startswith("start") and "strict" in messages[0], messages
    tracker.log_training_step(1, {"loss": 0.5})
    assert tracker.finalize_experiment()["steps"]["count"] == 1


@pytest.mark.parametrize(("call", "args", "named"), [
    ("log_checkpoint", (None,), "checkpoint_path is missing"),
    ("log_checkpoint", (float("nan"),), "checkpoint_path should be a string"),
    ("log_data_score", ("s1", 1.0, float("inf")), "after_loss is Infinity"),
    ("log_data_score", ("s1", 1.0, 10**30), "after_loss is an integer beyond 64 bits"),
    ("log_modification_stats", ({"depth": object()},), "value for 'depth' is not a number"),
], ids=["path-none", "path-nan", "loss-inf", "loss-huge", "stat-object"])
def test_one_bad_value_is_one_warning(tracker, lezea_warnings, call, args, named):
    """A value that fails one check is not blamed again by a later check of the same call (a missing path
    is no 'file not found', an infinite loss no 'negative score', a stat that is no number no 'no JSON
    value'): one warning, naming the problem, and the call is still recorded."""
    getattr(tracker, call)(*args)
    messages = lezea_warnings()
    assert len(messages) == 1 and named in messages[0], messages
    recorded = {"log_checkpoint": "checkpoint", "log_data_score": "data_score",
                "log_modification_stats": "modification_stats"}
    assert audit_events(tracker)[-1]["kind"] == recorded[call]
