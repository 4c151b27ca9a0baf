"""Bad input never raises: one warning naming the call and the problem, and the valid part is recorded."""

from __future__ import annotations

import json
import math

import pytest

from lezea_otel import ExperimentTracker


class Scalar0d:
    """Shaped like a torch 0-d tensor: .item(), .shape == () (torch itself is not needed)."""

    shape = ()
    ndim = 0

    def __init__(self, value: float) -> None:
        self._value = value

    def item(self) -> float:
        return self._value


def steps_in_audit(tracker: ExperimentTracker) -> list[dict]:
    tracker._pipeline.audit.flush()
    lines = tracker.audit_path.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == "training_step"]


@pytest.fixture
def tracker(capture):
    tracker = capture.tracker("inputs", auto_start=True)
    yield tracker
    tracker.finalize_experiment()


class TestTrainingStepInput:
    @pytest.mark.parametrize(("metrics", "kept", "problem"), [
        ({"loss": None, "acc": 0.5}, {"acc": 0.5}, "value for 'loss' is not a number"),
        ({"loss": "0.5", "acc": 0.5}, {"acc": 0.5}, "value for 'loss' is not a number"),
        ({"loss": [1, 2], "acc": 0.5}, {"acc": 0.5}, "value for 'loss' is not a number"),
        ({"opt": {"lr": 0.1}, "acc": 0.5}, {"opt.lr": 0.1, "acc": 0.5}, "nested dicts are flattened"),
        ({3: 0.25, "acc": 0.5}, {"3": 0.25, "acc": 0.5}, "keys must be strings"),
        (None, {}, "metrics must be a dict"),
        ("loss=0.5", {}, "metrics must be a dict"),
    ])
    def test_bad_values_warn_once_and_keep_the_rest(self, tracker, capture, lezea_warnings, metrics, kept, problem):
        """The same bad call 50 times gives one warning; valid keys of each call are recorded."""
        for step in range(1, 51):
            tracker.log_training_step(step, metrics)
        messages = lezea_warnings()
        assert len(messages) == 1, messages
        assert messages[0].startswith("log_training_step:") and problem in messages[0]
        assert all(e["data"].get("metrics", {}) == kept for e in steps_in_audit(tracker))
        if "acc" in kept:
            assert capture.points("lezea.training.acc")[0].value == 0.5

    def test_nan_and_inf_are_recorded(self, tracker, capture, lezea_warnings):
        """A diverging loss is information: recorded as NaN, one warning, counted in the summary."""
        tracker.log_training_step(1, {"loss": 1.0})
        for step in range(2, 10):
            tracker.log_training_step(step, {"loss": math.nan, "grad": math.inf})
        assert len([m for m in lezea_warnings() if "NaN" in m]) == 1
        assert len([m for m in lezea_warnings() if "Infinity" in m]) == 1
        last = steps_in_audit(tracker)[-1]["data"]["metrics"]
        assert last["loss"] == "NaN" and last["grad"] == "Infinity"
        assert capture.points("lezea.training.loss") == []  # the SDK cannot carry NaN: no stale value either
        assert capture.points("lezea.training.nonfinite", lezea__metric__key="loss")[0].value == 8
        stats = tracker.get_experiment_summary()["metrics"]["loss"]
        assert stats["nonfinite"] == 8 and stats["best"] == 1.0
        assert math.isnan(tracker.get_experiment_data()["metrics"]["loss"][-1][1])

    def test_numpy_and_tensor_scalars_are_numbers(self, tracker, capture, lezea_warnings):
        """numpy scalars, 0-d arrays and tensor-like 0-d values are accepted silently."""
        import numpy as np
        tracker.log_training_step(np.int64(1), {"loss": np.float32(0.5), "acc": np.array(0.25),
                                               "t": Scalar0d(2.0), "flag": True})
        assert lezea_warnings() == []
        (event,) = steps_in_audit(tracker)
        assert event["step"] == 1
        assert event["data"]["metrics"] == {"loss": 0.5, "acc": 0.25, "t": 2.0, "flag": 1.0}

    @pytest.mark.parametrize(("steps", "problem"), [
        ([-1], "step is negative"),
        ([5, 5], "step did not increase"),
        ([5, 3], "step did not increase"),
        ([3.5], "step must be an integer"),
        (["x"], "step must be an integer"),
    ])
    def test_odd_steps_warn_and_still_record(self, tracker, lezea_warnings, steps, problem):
        """Negative, repeated, decreasing or non-integer steps warn once; the values are still recorded."""
        for step in steps:
            tracker.log_training_step(step, {"loss": 0.5})
        messages = lezea_warnings()
        assert len(messages) == 1 and problem in messages[0], messages
        assert len(steps_in_audit(tracker)) == len(steps)


class TestOtherCalls:
    def test_garbage_never_raises(self, tracker, lezea_warnings):
        """Every log_* call survives wrong types, and says which call had the problem."""
        tracker.log_lezea_config("many", None, 42, hyperparameters="lr=1", seeds=[1, 2])
        tracker.log_modification_tree("x", modifications=5, statistics=[1])
        tracker.log_modification_tree_stats("nope")
        tracker.log_modification_stats(None)
        tracker.log_data_splits(5, "abc", None)
        tracker.log_data_usage(None, epoch="e")
        tracker.log_data_score(object(), "a", None)
        tracker.log_delta_loss(None, "x", prev_loss=[1])
        tracker.log_resource(None, cpu="hot", gpu=-5, mem=math.inf)
        tracker.log_component_resources(1, 2, cpu_percent="a", memory_mb=None)
        tracker.log_checkpoint(None, step=-1)
        tracker.log_dataset_version(None, version_tag=3)
        tracker.log_results(result_dict=[1], tasker_rewards="x", action_outputs=object())
        tracker.log_reward(None, "high")
        tracker.log_resource_cost(cpu_hours="x", mem_gb=None)
        tracker.log_comment(None)
        tracker.log_conclusion(42)
        tracker.log_business_metrics(resource_cost_eur="cheap", other=1.0)
        calls = {m.split(":", 1)[0] for m in lezea_warnings()}
        assert {"log_lezea_config", "log_modification_tree", "log_data_splits", "log_resource",
                "log_checkpoint", "log_results", "log_reward", "log_business_metrics"} <= calls
        summary = tracker.get_experiment_summary()
        assert summary["business"] == {"other": 1.0}
        assert summary["config"]["algorithm_type"] == "42"

    def test_wrong_arity_never_raises(self, capture, monkeypatch, lezea_warnings):
        """Even a call with missing arguments warns instead of raising (internal-error path)."""
        monkeypatch.delenv("LEZEA_RAISE_INTERNAL")
        tracker = capture.tracker("arity", auto_start=True)
        tracker.log_training_step()  # type: ignore[call-arg]
        tracker.log_reward()  # type: ignore[call-arg]
        assert any(m.startswith("log_training_step:") for m in lezea_warnings())
        tracker.finalize_experiment()

    def test_huge_id_list_is_capped_in_the_audit(self, tracker, lezea_warnings):
        """100,000 sample ids: the audit keeps 10,000, the full count and a digest; one warning."""
        tracker.log_data_usage([f"s{i}" for i in range(100_000)], epoch=1)
        tracker._pipeline.audit.flush()
        (usage,) = [json.loads(x) for x in tracker.audit_path.read_text().splitlines() if '"data_usage"' in x]
        assert usage["data"]["count"] == 100_000 and len(usage["data"]["sample_ids"]) == 10_000
        assert usage["data"]["truncated"] is True and len(usage["data"]["sha256"]) == 64
        assert len(lezea_warnings()) == 1


class TestLifecycleMisuse:
    def test_call_before_start_starts_the_run(self, capture, lezea_warnings):
        """A log call before start() warns once and the run starts, so nothing is lost."""
        tracker = capture.tracker("early")
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.log_training_step(2, {"loss": 0.4})
        assert [m for m in lezea_warnings() if "before start()" in m] == [
            "log_training_step: called before start(): starting the run now"]
        assert tracker.finalize_experiment()["steps"]["count"] == 2

    def test_call_after_finalize_reaches_the_audit(self, capture, lezea_warnings):
        """After finalize a call still lands in events.jsonl, with one warning saying so."""
        tracker = capture.tracker("late", auto_start=True)
        tracker.finalize_experiment()
        tracker.log_training_step(9, {"loss": 0.1})
        tracker.log_comment("afterthought")
        assert any("after finalize_experiment()" in m for m in lezea_warnings())
        kinds = [json.loads(x)["kind"] for x in tracker.audit_path.read_text().splitlines()]
        assert kinds[-2:] == ["training_step", "comment"]

    def test_unwritable_runs_dir_falls_back(self, tmp_path, lezea_warnings):
        """A runs folder that cannot be created moves the audit to a temporary folder, with a warning."""
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        tracker = ExperimentTracker("ro", runs_dir=blocker / "runs", quiet=True)
        tracker.start(prometheus_port=None)
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        assert any("not writable" in m for m in lezea_warnings())
        assert '"training_step"' in tracker.audit_path.read_text()

    def test_strict_raises_only_at_start(self, capture, monkeypatch):
        """A bad setting is silent at construction and raises LezeaConfigError from start(strict=True)."""
        from lezea_otel import LezeaConfigError

        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
        tracker = capture.tracker("strict")
        with pytest.raises(LezeaConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon'"):
            tracker.start(strict=True, prometheus_port=None)

    def test_bad_setting_warns_at_start_and_uses_default(self, capture, monkeypatch, lezea_warnings):
        """Without strict, the same setting is one warning naming variable and value, and the default applies."""
        monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "-1")
        tracker = capture.tracker("lenient", auto_start=True)
        assert any("LEZEA_SHUTDOWN_TIMEOUT='-1'" in m for m in lezea_warnings())
        assert tracker.settings.shutdown_timeout_s == 5.0
        tracker.finalize_experiment()
