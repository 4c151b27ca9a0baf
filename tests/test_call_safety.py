"""How a call is made can never hurt: call mistakes are the user's, in Python's words; the
constructor always gives a working tracker; nothing handed to OTLP can stall or kill an export;
a metric collection landing mid-write loses nothing.

These run with ``LEZEA_RAISE_INTERNAL=1`` (conftest): a user's mistake must not look like our bug.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lezea_otel import ExperimentTracker, LezeaConfigError

from .hostile import BadBool, BadHash, BadText, failing_generator
from .otlp_receiver import HttpReceiver


@pytest.fixture(autouse=True)
def _no_default_prometheus_port(monkeypatch):
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")


def audit_kinds(tracker: ExperimentTracker) -> list[str]:
    """The kinds of the audit's lines, every line parsed."""
    tracker.get_experiment_data()
    return [json.loads(line)["kind"] for line in tracker.audit_path.read_text().splitlines()]


class TestCallMistakes:
    @pytest.mark.parametrize(("call", "args", "kwargs", "expected"), [
        ("log_reward", ("a",), {}, "log_reward() missing 1 required positional argument: 'reward'"),
        ("log_reward", (), {},
         "log_reward() missing 2 required positional arguments: 'agent_id' and 'reward'"),
        ("log_reward", ("a",), {"rewad": 1.0},
         "log_reward() got an unexpected keyword argument 'rewad' (did you mean 'reward'?)"),
        ("log_training_step", (1, {}, "train", 5), {},
         "log_training_step() takes from 2 to 3 positional arguments but 4 were given"),
        ("log_training_step", (1,), {"step": 2},
         "log_training_step() got multiple values for argument 'step'"),
        ("log_comment", (), {}, "log_comment() missing 1 required positional argument: 'comment'"),
    ])
    def test_a_call_that_cannot_bind_is_the_users_mistake(self, tracker, lezea_warnings, call, args, kwargs,
                                                          expected):
        """The warning is Python's message without internals (no class names, no 'internal error')
        and says nothing was recorded; nothing was."""
        before = audit_kinds(tracker)
        result = getattr(tracker, call)(*args, **kwargs)
        assert result is None
        assert lezea_warnings() == [f"{expected}; nothing was recorded for this call"]
        assert audit_kinds(tracker) == before

    def test_each_distinct_mistake_warns_once(self, tracker, lezea_warnings):
        """Three different mistakes on one call, 100 times each: three warnings, 300 counted."""
        for _ in range(100):
            tracker.log_reward("a")  # type: ignore[call-arg]
            tracker.log_reward("a", rewad=1.0)  # type: ignore[call-arg]
            tracker.log_reward("a", 1.0, 2, "tasker", 5)  # type: ignore[call-arg]
        messages = lezea_warnings()
        assert len(messages) == 3 and all(m.startswith("log_reward() ") for m in messages), messages
        assert tracker.get_experiment_summary()["warnings"]["count"] == 300

    def test_a_scope_call_mistake_still_gives_a_usable_block(self, tracker, lezea_warnings):
        """``with tracker.builder_scope():`` warns, opens nothing, and the body's records are kept."""
        with tracker.builder_scope():  # type: ignore[call-arg]
            tracker.log_training_step(1, {"loss": 0.5})
        assert lezea_warnings() == [("builder_scope() missing 1 required positional argument: 'builder_id'; "
                                    "nothing was recorded for this call")]
        assert tracker.get_experiment_summary()["metrics"]["loss"]["last"] == 0.5

    def test_a_type_error_of_ours_is_still_an_internal_error(self, tracker, monkeypatch):
        """A TypeError raised inside a call (our bug) is not mistaken for a call mistake: it raises under
        LEZEA_RAISE_INTERNAL=1 and is an internal-error warning without it."""

        def broken(*_args: Any) -> None:
            raise TypeError("our own bug")

        monkeypatch.setattr(tracker._session, "emit", broken)
        with pytest.raises(TypeError, match="our own bug"):
            tracker.log_comment("x")
        monkeypatch.undo()  # the fixture's finalize needs the real one

    def test_internal_errors_warn_without_the_flag(self, tracker, monkeypatch, lezea_warnings):
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        monkeypatch.setattr(tracker._session, "emit",
                            lambda *_: (_ for _ in ()).throw(TypeError("our own bug")))
        tracker.log_comment("x")
        monkeypatch.undo()
        (message,) = lezea_warnings()
        assert message.startswith("log_comment: internal error (TypeError)") and "our own bug" in message

    def test_every_internal_error_reporter_raises_under_the_flag(self, monkeypatch, lezea_warnings):
        """Exit hooks, the worker and scope exits report internal errors through one function: under
        LEZEA_RAISE_INTERNAL=1 it raises (the suite fails), without it it warns once per call and type."""
        from lezea_otel.util.safety import report_internal_error

        with pytest.raises(KeyError):
            report_internal_error("atexit", KeyError("x"))
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        for _ in range(3):
            report_internal_error("a call of this test", KeyError("x"))
        assert lezea_warnings() == [("a call of this test: internal error in lezea_otel (KeyError: 'x'); "
                                    "training continues with less telemetry")]


class TestConstructor:
    @pytest.mark.parametrize(("args", "kwargs", "parameter"), [
        ((), {}, "experiment_name"),
        (("run",), {"bogus": 1}, "'bogus'"),
        (("run", "", None, False, False, 7), {}, "positional arguments"),
        ((BadText(),), {}, "experiment_name"),
        (("run", BadText()), {}, "purpose"),
        (("run",), {"tags": ["ok", BadText()]}, "tags"),
        (("run",), {"tags": failing_generator()}, "tags"),
        (("run",), {"runs_dir": "runs/a\0b"}, "runs_dir"),
        (("run",), {"runs_dir": BadText()}, "runs_dir"),
        (("run",), {"service_name": BadText()}, "service_name"),
        (("run",), {"service_name": "svc\udc80"}, "service_name"),
        (("run",), {"async_mode": BadBool()}, "async_mode"),
        (("run",), {"auto_start": BadBool()}, "auto_start"),
        (("run",), {"extra_exporters": failing_generator()}, "extra_exporters"),
        (("run\udc80",), {}, "experiment_name"),
    ], ids=["no-name", "unknown-keyword", "too-many", "name-str-raises", "purpose-str-raises",
            "tag-str-raises", "tags-generator-raises", "runs-dir-nul", "runs-dir-str-raises",
            "service-str-raises", "service-surrogate", "async-bool-raises", "auto-start-bool-raises",
            "exporters-generator-raises", "name-surrogate"])
    def test_the_constructor_never_raises(self, tmp_path, lezea_warnings, args, kwargs, parameter):
        """Each bad argument warns (naming it), is replaced or ignored, and the tracker works."""
        kwargs = {"runs_dir": tmp_path / "runs", "quiet": True, **kwargs}
        tracker = ExperimentTracker(*args, **kwargs)
        tracker.start(prometheus_port=None)
        tracker.log_training_step(1, {"loss": 0.5})
        summary = tracker.finalize_experiment()
        messages = lezea_warnings()
        assert any(parameter in m for m in messages), messages
        assert not any("internal error" in m for m in messages), messages
        assert summary["steps"]["count"] == 1
        assert audit_kinds(tracker)[0] == "experiment_start" and audit_kinds(tracker)[-1] == "experiment_end"
        assert isinstance(tracker.experiment_name, str) and tracker.experiment_name.encode()

    @pytest.mark.parametrize(("args", "kwargs", "expected"), [
        ((), {}, ("ExperimentTracker() missing 1 required positional argument: 'experiment_name'; "
                 "using experiment_name='unnamed'")),
        (("run",), {"bogus": 1}, "ExperimentTracker() got an unexpected keyword argument 'bogus'; ignored"),
        (("run",), {"purpos": "x"},
         "ExperimentTracker() got an unexpected keyword argument 'purpos' (did you mean 'purpose'?); "
         "ignored"),
    ])
    def test_constructor_mistakes_in_pythons_words(self, tmp_path, lezea_warnings, args, kwargs, expected):
        """One warning per mistake, the repair said; the rest of the call is kept."""
        tracker = ExperimentTracker(*args, runs_dir=tmp_path / "runs", quiet=True, **kwargs)
        assert lezea_warnings() == [expected]
        assert tracker.experiment_name == (args[0] if args else "unnamed")
        assert tracker.run_dir.parent == tmp_path / "runs"
        tracker.finalize_experiment()

    def test_strict_start_still_raises_a_config_error(self, tmp_path):
        """The one documented exception survives the constructor's guard."""
        tracker = ExperimentTracker("run", runs_dir=tmp_path / "runs", quiet="maybe")
        with pytest.raises(LezeaConfigError):
            tracker.start(strict=True, prometheus_port=None)


class TestScopeInput:
    def test_an_empty_span_name_warns(self, tracker, capture, lezea_warnings):
        with tracker.span(""):
            pass
        tracker.finalize_experiment()
        assert lezea_warnings() == ["span: name is empty: got ''; the span is named 'phase'"]
        assert len(capture.spans("phase")) == 1

    def test_odd_scope_ids_and_network_types_keep_the_scope(self, tracker, capture, lezea_warnings):
        """An id whose __str__ raises and a network_type whose __eq__/__hash__ raise still open the scope."""
        with tracker.builder_scope(BadText()):
            tracker.log_training_step(1, {"loss": 0.5})
        with tracker.network_scope("n1", network_type=BadHash()):
            tracker.log_training_step(2, {"loss": 0.4})
        tracker.finalize_experiment()
        assert len(capture.spans("builder")) == 1
        (network,) = capture.spans("network")
        assert network.attributes["lezea.network.type"] == "odd-type"
        assert not any("internal error" in m for m in lezea_warnings())
        losses = {k for k in tracker.get_experiment_summary()["metrics"] if k.endswith("loss")}
        assert losses >= {"network:n1/loss"}

    def test_an_exception_whose_str_raises_still_ends_the_scope(self, tracker, capture):
        """The user's own exception propagates unchanged; the scope ends, marked with the error."""

        class Unprintable(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no message")

        with pytest.raises(Unprintable), tracker.builder_scope("b1"):
            raise Unprintable()
        tracker.finalize_experiment()
        (span,) = capture.spans("builder")
        assert span.status.status_code.name == "ERROR"
        assert "scope_end" in audit_kinds(tracker)


def _lone_surrogate_run(tracker: ExperimentTracker) -> None:
    """What a latin-1 file name from os.listdir and an int counter past 2**63 do to a run."""
    with tracker.builder_scope("b\udc80"):
        tracker.log_training_step(1, {"loss": 0.5, "seen": 2**64})
        with pytest.raises(ValueError), tracker.span("load"):
            raise ValueError("cannot open data\udc80.bin")
    tracker.log_comment("done")


class TestOtlpValues:
    def test_no_value_stalls_or_kills_an_otlp_export(self, tmp_path, monkeypatch):
        """Against a real OTLP receiver: the root span, every metric point and every log record arrive,
        with surrogates replaced and the int beyond int64 sent as a float."""
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")  # a point per interval: a stall would show
        receiver = HttpReceiver()
        try:
            tracker = ExperimentTracker("wire", runs_dir=tmp_path, endpoint=receiver.endpoint, quiet=True)
            tracker.start(prometheus_port=None)
            _lone_surrogate_run(tracker)
            summary = tracker.finalize_experiment()
        finally:
            receiver.stop()
        got = receiver.received
        spans = {span.name: span for span in got.spans()}
        assert {"experiment", "builder", "load"} <= set(spans)
        builder_id = next(a.value.string_value for a in spans["builder"].attributes
                          if a.key == "lezea.scope.id")
        assert builder_id == "b\ufffd"
        assert "data\ufffd.bin" in spans["load"].status.message
        assert got.metric_points("lezea.training.seen")[-1][1] == float(2**64)
        loss = got.metric_points("lezea.training.loss")
        assert loss and loss[-1][0]["lezea.scope"] == "builder:b\ufffd"
        assert any(r.event_name == "lezea.comment" for r in got.log_records())
        for signal, report in summary["delivery"]["signals"].items():
            assert report["exported"] == report["produced"], (signal, report)

    def test_the_sdk_is_handed_only_encodable_values(self, tracker, capture):
        """The in-memory capture sees what the SDK was given: valid UTF-8 everywhere, ints within int64."""
        _lone_surrogate_run(tracker)
        tracker.finalize_experiment()

        def encodable(value: Any) -> bool:
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return False
                return True
            if isinstance(value, int) and not isinstance(value, bool):
                return -(2**63) <= value < 2**63
            if isinstance(value, (list, tuple)):
                return all(encodable(v) for v in value)
            return True

        for span in capture.spans():
            assert encodable(span.name) and encodable(span.status.description or "")
            assert all(encodable(k) and encodable(v) for k, v in span.attributes.items())
            for event in span.events:
                assert all(encodable(k) and encodable(v) for k, v in event.attributes.items())
        for point in capture.collect():
            assert encodable(point.value if not isinstance(point.value, dict) else 0)
            assert all(encodable(k) and encodable(v) for k, v in point.attributes.items())
        for record in capture.logs():
            assert encodable(record.log_record.body)
            assert all(encodable(k) and encodable(v) for k, v in (record.log_record.attributes or {}).items())




TEN_SILENT_MISTAKES = [
    ("log_training_step", lambda t: t.log_training_step(None, {"loss": 1.0}), "step is None"),
    ("log_training_step", lambda t: t.log_training_step(2, {"": 1.0, "acc": 0.5}), "an empty key"),
    ("log_training_step", lambda t: t.log_training_step(3, {"k" * 5000: 1.0}),
     "a key longer than 200 characters"),
    ("log_training_step", lambda t: t.log_training_step(4, {f"k{i}": 1.0 for i in range(5000)}),
     "more than 256 training keys"),
    ("log_data_splits", lambda t: t.log_data_splits(None, None, None), "no split given"),
    ("log_lezea_config", lambda t: t.log_lezea_config(1, 1, "SAC", hyperparameters={"act": print}),
     "a value that is no JSON value"),
    ("log_modification_tree_stats", lambda t: t.log_modification_tree_stats(None), "statistics is None"),
    ("log_modification_stats", lambda t: t.log_modification_stats({"depth": "deep"}),
     "value for 'depth' is not a number"),
    ("log_resource_cost", lambda t: t.log_resource_cost(cost_eur=-5.0), "cost_eur is negative"),
    ("log_results", lambda t: t.log_results(), "nothing to record"),
]
"""Inputs that passed without a word (a fuzzing session's findings), the call each is made on and the
words of the one warning each must give."""


@pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async"])
def test_every_quiet_mistake_now_says_so_once_and_keeps_the_valid_part(capture, lezea_warnings, async_mode):
    tracker = capture.tracker("mistakes", auto_start=True, async_mode=async_mode)
    for _call, mistake, _words in TEN_SILENT_MISTAKES:
        mistake(tracker)
    summary = tracker.finalize_experiment()
    said = lezea_warnings()
    for call, _mistake, words in TEN_SILENT_MISTAKES:
        matching = [m for m in said if m.startswith(f"{call}:") and words in m]
        assert len(matching) == 1, (call, words, said)
    metrics = summary["metrics"]
    assert "acc" in metrics and "k" * 200 in metrics  # the valid part, and the long key cut
    assert metrics["loss"]["count"] == 1  # the step without a number is still recorded
    assert summary["folded"]["metrics"] > 0
