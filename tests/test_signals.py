"""Each spec section, through the public API: the spans, metric points, log records and audit lines it
makes."""

from __future__ import annotations

import json
import math

import pytest
from opentelemetry.trace import StatusCode

from lezea_otel import ExperimentTracker, NetworkType


def audit(tracker: ExperimentTracker, kind: str | None = None) -> list[dict]:
    tracker._session.pipeline.drain()
    tracker._session.pipeline.audit.flush()
    events = [json.loads(line) for line in tracker.audit_path.read_text().splitlines()]
    return [e for e in events if kind is None or e["kind"] == kind]


class TestLifecycle:
    def test_root_span_covers_the_run(self, capture):
        """start() opens the 'experiment' span, finalize ends it once with status and identity."""
        tracker = capture.tracker("life", purpose="p", tags=["a", "b"], auto_start=True)
        assert capture.spans("experiment") == []  # still open while the run lives
        tracker.finalize_experiment()
        tracker.end()
        (root,) = capture.spans("experiment")
        assert root.attributes["lezea.experiment.id"] == tracker.experiment_id
        assert root.attributes["lezea.run.status"] == "finished"
        assert root.resource.attributes["lezea.experiment.tags"] == ("a", "b")
        assert [e["kind"] for e in audit(tracker, "experiment_end")] == ["experiment_end"]

    def test_started_and_finished_events(self, capture):
        """The run announces itself and its end as log records in the experiment's trace."""
        tracker = capture.tracker("life", auto_start=True)
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        started = capture.logs("lezea.experiment.started")[0].log_record
        finished = capture.logs("lezea.experiment.finished")[0].log_record
        assert started.trace_id == finished.trace_id == root.context.trace_id
        assert finished.attributes["lezea.run.status"] == "finished"


class TestScopes:
    def test_nested_scopes_are_nested_spans(self, capture):
        """builder > tasker > algorithm > network > layer make a chain of child spans with their path."""
        tracker = capture.tracker("scopes", auto_start=True)
        with tracker.builder_scope("42"), tracker.tasker_scope("A"), tracker.algorithm_scope("sac"), \
                tracker.network_scope("n1", NetworkType.HYBRID), tracker.layer_scope(3):
            tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        spans = {s.name: s for s in capture.spans()}
        chain = ["experiment", "builder", "tasker", "algorithm", "network", "layer"]
        for parent, child in zip(chain, chain[1:], strict=False):
            assert spans[child].parent.span_id == spans[parent].context.span_id
        assert spans["layer"].attributes["lezea.scope"] == (
            "builder:42/tasker:A/algorithm:sac/network:n1/layer:3")
        assert spans["network"].attributes["lezea.network.type"] == "hybrid"
        (step,) = audit(tracker, "training_step")
        assert step["data"]["metrics"] == {"builder:42/tasker:A/algorithm:sac/network:n1/layer:3/loss": 0.5}
        assert step["span_id"] == format(spans["layer"].context.span_id, "016x")

    def test_exception_is_recorded_and_reraised_unchanged(self, capture):
        """The user's exception leaves the scope as the same object, and the span says ERROR."""
        tracker = capture.tracker("boom", auto_start=True)
        error = ValueError("bad batch")
        with pytest.raises(ValueError) as caught, tracker.builder_scope("7"):
            raise error
        assert caught.value is error
        tracker.finalize_experiment()
        (span,) = capture.spans("builder")
        assert span.status.status_code == StatusCode.ERROR
        assert span.events[0].name == "exception"
        assert tracker.get_experiment_summary()["scopes"]["builder:7"]["errors"] == 1


class TestPhases:
    def test_context_manager_and_decorator(self, capture):
        """tracker.span times a block or a function as a child span plus a duration histogram."""
        tracker = capture.tracker("phases", auto_start=True)

        @tracker.span("forward")
        def forward(x: int) -> int:
            return x * 2 if x < 2 else forward(x - 1)

        with tracker.builder_scope("1"):
            assert forward(2) == 2
        with tracker.span("backward", optimizer="adam"):
            pass
        (point,) = capture.points("lezea.phase.duration", lezea__phase__name="forward")
        assert point.value["count"] == 2 and point.unit == "s"
        tracker.finalize_experiment()
        forwards = capture.spans("forward")
        assert len(forwards) == 2
        assert forwards[0].parent.span_id == forwards[1].context.span_id  # the recursion nests
        assert capture.spans("backward")[0].attributes["optimizer"] == "adam"
        assert tracker.get_experiment_summary()["phases"]["forward"]["count"] == 2


class TestTraining:
    def test_values_become_gauges_with_scope_and_split(self, capture):
        """Each key is a gauge; scope and split are attributes; the experiment id is on every point."""
        tracker = capture.tracker("train", auto_start=True)
        tracker.log_training_step(1, {"loss": 1.0, "acc": 0.5}, data_split="train")
        with tracker.builder_scope("42"):
            tracker.log_training_step(2, {"loss": 0.8}, data_split="val")
        (plain,) = capture.points("lezea.training.loss", lezea__data_split="train")
        (scoped,) = capture.points("lezea.training.loss", lezea__scope="builder:42")
        assert plain.value == 1.0 and scoped.value == 0.8
        assert scoped.attributes["lezea.data_split"] == "val"
        assert plain.attributes["lezea.experiment.id"] == tracker.experiment_id
        assert capture.points("lezea.training.step")[0].value == 2
        tracker.finalize_experiment()

    def test_delta_loss_is_computed_per_scope_and_split(self, capture):
        """delta_loss follows loss within the same scope and split, in metrics, audit and summary."""
        tracker = capture.tracker("delta", auto_start=True)
        tracker.log_training_step(1, {"loss": 1.0})
        tracker.log_training_step(1, {"loss": 5.0}, data_split="val")
        tracker.log_training_step(2, {"loss": 0.75})
        assert capture.points("lezea.training.delta_loss")[0].value == pytest.approx(-0.25)
        assert audit(tracker, "training_step")[-1]["data"]["metrics"]["delta_loss"] == pytest.approx(-0.25)
        summary = tracker.finalize_experiment()
        assert summary["metrics"]["loss"]["best"] == 0.75
        assert summary["metrics"]["val/loss"]["count"] == 1
        assert "val/delta_loss" not in summary["metrics"]

    def test_history_comes_back_from_the_audit(self, capture):
        """get_experiment_data returns every step's value, not just the last one."""
        tracker = capture.tracker("hist", auto_start=True)
        for step in range(1, 6):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        data = tracker.get_experiment_data()
        assert data["metrics"]["loss"] == [[s, 1.0 / s] for s in range(1, 6)]
        tracker.finalize_experiment()


class TestConfigAndEvents:
    def test_config_positional_call(self, capture):
        """log_lezea_config(64, 4, "SAC", ...) lands on the root span and as a correlated config event."""
        tracker = capture.tracker("cfg", auto_start=True)
        tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr": 3e-4}, seeds={"global": 1})
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        assert root.attributes["lezea.config.tasker_population_size"] == 64
        assert root.attributes["lezea.config.hyperparameters.lr"] == 3e-4
        (config,) = capture.logs("lezea.config")
        assert config.log_record.attributes["lezea.config.algorithm_type"] == "SAC"
        assert config.log_record.trace_id == root.context.trace_id
        assert tracker.get_experiment_summary()["config"]["seeds"] == {"global": 1}

    def test_checkpoint_dataset_comment_conclusion(self, capture, tmp_path):
        """Artifacts and words are events with their facts; checkpoints are counted."""
        path = tmp_path / "ckpt.pt"
        path.write_bytes(b"x" * 1000)
        tracker = capture.tracker("events", auto_start=True)
        tracker.log_checkpoint(str(path), step=100)
        tracker.log_dataset_version("imagenet", version_tag="v1.0", dataset_path="data/imagenet")
        tracker.log_comment("converged early")
        tracker.log_conclusion("beats baseline")
        assert capture.points("lezea.checkpoint.count")[0].value == 1
        assert capture.points("lezea.checkpoint.size")[0].value == 1000
        tracker.finalize_experiment()
        checkpoint = capture.logs("lezea.checkpoint")[0].log_record
        assert checkpoint.attributes["lezea.checkpoint.size_bytes"] == 1000
        assert len(checkpoint.attributes["lezea.checkpoint.sha256"]) == 64
        assert checkpoint.attributes["lezea.step"] == 100
        assert capture.logs("lezea.dataset")[0].log_record.attributes["lezea.dataset.version_tag"] == "v1.0"
        assert capture.logs("lezea.comment")[0].log_record.body == "converged early"
        summary = tracker.get_experiment_summary()
        assert summary["conclusion"] == "beats baseline" and summary["comments"] == ["converged early"]
        assert summary["checkpoints"][0]["step"] == 100

    def test_modification_and_data_calls(self, capture):
        """Modification trees, stats, splits, usage and scores become counts, gauges and events."""
        tracker = capture.tracker("mods", auto_start=True)
        tracker.log_modification_tree(5, modifications=[{"op": "mutate"}, {"op": "prune"}],
                                      statistics={"mutations": 5})
        tracker.log_modification_tree_stats({"accept_rate": 0.31, "depth": 4})
        tracker.log_modification_stats({"crossover": 12, "mutation": 33})
        tracker.log_data_splits(["a", "b", "c"], ["d"], [])
        tracker.log_data_usage(sample_ids=["a", "b", "c"], epoch=3)
        tracker.log_data_score(sample_id="a", before_loss=1.2, after_loss=0.9)
        tracker.log_delta_loss(epoch=5, loss=0.44, prev_loss=0.53)
        assert capture.points("lezea.modification.count")[0].value == 2
        assert capture.points("lezea.modification.stat", lezea__stat__name="accept_rate")[0].value == 0.31
        assert capture.points("lezea.modification.stat", lezea__stat__name="crossover")[0].value == 12
        assert {p.attributes["lezea.split.name"]: p.value
                for p in capture.points("lezea.data.split.size")} == {"train": 3, "val": 1, "test": 0}
        assert capture.points("lezea.data.samples.used")[0].value == 3
        assert capture.points("lezea.data.score")[0].value["sum"] == pytest.approx(0.3)
        assert capture.points("lezea.epoch.delta_loss")[0].value == pytest.approx(-0.09)
        (usage,) = audit(tracker, "data_usage")
        assert usage["data"]["sample_ids"] == ["a", "b", "c"] and usage["data"]["epoch"] == 3
        tracker.finalize_experiment()
        tree = capture.logs("lezea.modification_tree")[0]
        assert tree.log_record.attributes["lezea.statistics.mutations"] == 5


class TestResultsResourcesBusiness:
    def test_rewards_and_results(self, capture):
        """Rewards are gauges per agent and role; action outputs are an event."""
        tracker = capture.tracker("results", auto_start=True)
        tracker.log_results(result_dict={"tasker_reward_avg": 0.71})
        tracker.log_results(tasker_rewards={"t0": 0.8}, builder_rewards={"b0": 0.6},
                            action_outputs={"action": [0, 1, 0]}, step=10)
        tracker.log_reward("t0", 0.91)
        rewards = {(p.attributes["lezea.agent.role"], p.attributes["lezea.agent.id"]): p.value
                   for p in capture.points("lezea.reward")}
        assert rewards == {("tasker", "t0"): 0.91, ("builder", "b0"): 0.6}
        assert capture.points("lezea.result")[0].value == 0.71
        summary = tracker.finalize_experiment()
        assert summary["rewards"]["tasker:t0"]["count"] == 2
        assert summary["rewards"]["tasker:t0"]["best"] == 0.91
        assert json.loads(capture.logs("lezea.results")[0].log_record.attributes["lezea.action_outputs"]) == {
            "action": [0, 1, 0]}

    def test_resources_in_otel_units_and_totals(self, capture):
        """Percent becomes a ratio, MB becomes bytes, and totals per component reach the summary."""
        tracker = capture.tracker("res", auto_start=True)
        tracker.log_resource("tasker#0", cpu=12.5, gpu=4.0, mem=512.0)
        tracker.log_component_resources(component_id="tasker#0", component_type="tasker", cpu_percent=37.5,
                                        memory_mb=1024.0, gpu_util_percent=6.0, io_operations=1024)
        (memory,) = capture.points("lezea.component.memory.usage", lezea__component__type="tasker")
        assert memory.value == 1024 * 2**20 and memory.unit == "By"
        assert memory.attributes["lezea.component.id"] == "tasker#0"
        cpu = capture.points("lezea.component.cpu.utilization", lezea__component__type="tasker")[0]
        assert cpu.value == 0.375
        totals = tracker.finalize_experiment()["resources"]["tasker#0"]
        assert totals["cpu_percent_mean"] == 25.0 and totals["memory_mb_peak"] == 1024.0
        assert totals["gpu_percent_mean"] == 5.0 and totals["io_operations_total"] == 1024

    def test_cost_and_business(self, capture):
        """Costs accumulate; the business cost is a gauge and counts toward the total."""
        tracker = capture.tracker("biz", auto_start=True)
        tracker.log_resource_cost(cpu_hours=3.2, mem_gb=11.7, io_bytes=5_000_000)
        tracker.log_resource_cost(cpu_hours=0.8)
        tracker.log_business_metrics(resource_cost_eur=8.73)
        assert capture.points("lezea.business")[0].value == 8.73
        assert capture.points("lezea.cost", lezea__cost__kind="cpu_hours")[0].value == pytest.approx(4.0)
        summary = tracker.finalize_experiment()
        assert summary["cost"]["cpu_hours"] == pytest.approx(4.0)
        assert summary["cost"]["total_eur"] == 8.73


class TestRecommendations:
    def _rules(self, tracker: ExperimentTracker) -> dict[str, dict]:
        return {item["rule"]: item for item in tracker.get_recommendations()}

    def test_nan_loss_is_flagged_with_its_step(self, capture):
        """A diverged run is named as such, with the first bad step."""
        tracker = capture.tracker("nan", auto_start=True)
        for step in range(1, 5):
            tracker.log_training_step(step, {"loss": math.nan if step >= 3 else 1.0 / step})
        item = self._rules(tracker)["nonfinite_loss"]
        assert item["evidence"]["first_step"] == 3 and "step 3" in item["message"]
        tracker.finalize_experiment()

    def test_plateau_cost_and_idle_gpu(self, capture):
        """A flat loss, a cost over the limit and an idle GPU each produce their advice."""
        tracker = capture.tracker("flat", auto_start=True, cost_limit_eur=5.0)
        for step in range(60):
            tracker.log_training_step(step, {"loss": 0.5 + (0.001 if step % 2 else 0.0)})
        tracker.log_resource_cost(cost_eur=8.0)
        for _ in range(3):
            tracker.log_component_resources("gpu-worker", "tasker", gpu_util_percent=5.0)
        rules = self._rules(tracker)
        assert {"loss_plateau", "cost_over_limit", "gpu_idle"} <= set(rules)
        assert rules["cost_over_limit"]["evidence"] == {"cost_eur": 8.0, "limit_eur": 5.0}
        tracker.finalize_experiment()

    def test_healthy_run_gets_no_warning(self, capture):
        """A steadily decreasing loss yields no loss advice."""
        tracker = capture.tracker("good", auto_start=True)
        for step in range(1, 100):
            tracker.log_training_step(step, {"loss": 2.0 / step})
        assert not {"loss_plateau", "nonfinite_loss", "loss_rising"} & set(self._rules(tracker))
        tracker.finalize_experiment()
