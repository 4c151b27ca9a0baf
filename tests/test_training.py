"""Training values, configuration, events, results, resources, business calls and recommendations.

Each spec call is checked for the audit line it writes and the metric points or log records it produces.
"""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from lezea_otel import ExperimentTracker

MB = 2**20


def audit(tracker: ExperimentTracker, kind: str | None = None) -> list[dict]:
    """The raw lines of ``events.jsonl`` under the run folder (flushed through a public call first)."""
    tracker.get_experiment_data()  # drains and flushes the audit
    lines = (tracker.run_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return [e for e in events if kind is None or e["kind"] == kind]


def attrs(record) -> dict:
    return dict(record.log_record.attributes)


def rules(tracker: ExperimentTracker) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for item in tracker.get_recommendations():
        out.setdefault(item["rule"], []).append(item)
    return out


class TestTrainingGauges:
    def test_each_key_is_a_gauge_with_experiment_id(self, tracker, capture):
        """log_training_step values become lezea.training.<key> gauges labelled with the experiment id."""
        tracker.log_training_step(1, {"loss": 0.731, "acc": 0.84})
        (loss,) = capture.points("lezea.training.loss")
        (acc,) = capture.points("lezea.training.acc")
        assert loss.value == 0.731 and acc.value == 0.84
        assert loss.kind == "Gauge"
        assert loss.attributes["lezea.experiment.id"] == tracker.experiment_id
        assert "lezea.scope" not in loss.attributes and "lezea.data_split" not in loss.attributes

    def test_gauge_holds_the_latest_value(self, tracker, capture):
        """After several steps the gauge reports the last value logged, not the first."""
        for step, loss in enumerate([1.0, 0.7, 0.4], start=1):
            tracker.log_training_step(step, {"loss": loss})
        (point,) = capture.points("lezea.training.loss")
        assert point.value == 0.4

    def test_loss_has_no_unit(self, tracker, capture):
        """Training values are unitless (no '1' that Prometheus would turn into _ratio)."""
        tracker.log_training_step(1, {"loss": 0.5})
        assert capture.points("lezea.training.loss")[0].unit == ""

    def test_scope_is_an_attribute_not_a_name(self, tracker, capture):
        """Inside builder_scope('42') the gauge is still lezea.training.loss, with
        lezea.scope='builder:42'."""
        tracker.log_training_step(1, {"loss": 1.0})
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 0.42})
        scoped = capture.points("lezea.training.loss", lezea__scope="builder:42")
        assert [p.value for p in scoped] == [0.42]
        plain = [p for p in capture.points("lezea.training.loss") if "lezea.scope" not in p.attributes]
        assert [p.value for p in plain] == [1.0]
        assert not [p for p in capture.collect() if "builder" in p.name]

    def test_data_split_is_an_attribute(self, tracker, capture):
        """data_split='val' puts lezea.data_split='val' on the point, separate from the train series."""
        tracker.log_training_step(1, {"loss": 0.9}, data_split="train")
        tracker.log_training_step(1, {"loss": 1.1}, data_split="val")
        assert capture.points("lezea.training.loss", lezea__data_split="train")[0].value == 0.9
        assert capture.points("lezea.training.loss", lezea__data_split="val")[0].value == 1.1

    def test_step_gauge_is_last_step(self, tracker, capture):
        """lezea.training.step reports the step of the last log_training_step call."""
        for step in (1, 2, 10):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        (point,) = capture.points("lezea.training.step")
        assert point.value == 10
        assert point.attributes["lezea.experiment.id"] == tracker.experiment_id

    def test_audit_line_has_step_and_values(self, tracker):
        """Each call is one training_step audit line with the step, values and split."""
        tracker.log_training_step(7, {"loss": 0.5, "acc": 1}, data_split="train")
        (line,) = audit(tracker, "training_step")
        assert line["step"] == 7
        assert line["data"]["metrics"] == {"loss": 0.5, "acc": 1.0}
        assert line["data"]["data_split"] == "train"


class TestDeltaLoss:
    def test_delta_loss_from_consecutive_losses(self, tracker, capture):
        """The second step's delta_loss is its loss minus the previous one, in metrics and in the audit."""
        tracker.log_training_step(1, {"loss": 1.0})
        tracker.log_training_step(2, {"loss": 0.75})
        (point,) = capture.points("lezea.training.delta_loss")
        assert point.value == pytest.approx(-0.25)
        first, second = audit(tracker, "training_step")
        assert "delta_loss" not in first["data"]["metrics"]
        assert second["data"]["metrics"]["delta_loss"] == pytest.approx(-0.25)

    def test_delta_loss_is_per_scope(self, tracker):
        """Losses in different scopes do not feed each other's delta_loss."""
        with tracker.builder_scope("1"):
            tracker.log_training_step(1, {"loss": 10.0})
        with tracker.builder_scope("2"):
            tracker.log_training_step(1, {"loss": 1.0})
        with tracker.builder_scope("1"):
            tracker.log_training_step(2, {"loss": 9.0})
        lines = [e["data"]["metrics"] for e in audit(tracker, "training_step")]
        assert lines[1] == {"builder:2/loss": 1.0}
        assert lines[2]["builder:1/delta_loss"] == pytest.approx(-1.0)

    def test_delta_loss_is_per_split(self, tracker, capture):
        """train and val losses each have their own delta_loss series."""
        tracker.log_training_step(1, {"loss": 1.0}, data_split="train")
        tracker.log_training_step(1, {"loss": 2.0}, data_split="val")
        tracker.log_training_step(2, {"loss": 0.5}, data_split="train")
        tracker.log_training_step(2, {"loss": 1.5}, data_split="val")
        for split in ("train", "val"):
            point = capture.points("lezea.training.delta_loss", lezea__data_split=split)[0]
            assert point.value == pytest.approx(-0.5), split
        summary = tracker.get_experiment_summary()["metrics"]
        assert summary["val/delta_loss"]["count"] == 1 and summary["train/delta_loss"]["count"] == 1

    def test_delta_loss_spans_steps_without_loss(self, tracker):
        """A step without loss in between does not reset the previous loss used for delta_loss."""
        tracker.log_training_step(1, {"loss": 1.0})
        tracker.log_training_step(2, {"acc": 0.5})
        tracker.log_training_step(3, {"loss": 0.4})
        last = audit(tracker, "training_step")[-1]
        assert last["data"]["metrics"]["delta_loss"] == pytest.approx(-0.6)

    def test_explicit_delta_loss_is_kept(self, tracker):
        """A delta_loss the user passes is recorded as given, not overwritten."""
        tracker.log_training_step(1, {"loss": 1.0})
        tracker.log_training_step(2, {"loss": 0.5, "delta_loss": 123.0})
        assert audit(tracker, "training_step")[-1]["data"]["metrics"]["delta_loss"] == 123.0


class TestTrainingSummary:
    def test_last_best_min_max_count(self, tracker):
        """Summary metrics give last/best/min/max/count per key; loss is minimised, acc maximised."""
        for step, (loss, acc) in enumerate([(1.0, 0.2), (0.3, 0.9), (0.6, 0.5)], start=1):
            tracker.log_training_step(step, {"loss": loss, "acc": acc})
        metrics = tracker.get_experiment_summary()["metrics"]
        loss, acc = metrics["loss"], metrics["acc"]
        assert (loss["last"], loss["best"], loss["best_step"]) == (0.6, 0.3, 2)
        assert (loss["min"], loss["max"], loss["count"]) == (0.3, 1.0, 3)
        assert (acc["best"], acc["best_step"], acc["goal"]) == (0.9, 2, "max")

    def test_summary_keys_per_scope_and_split(self, tracker):
        """Keys in the summary carry the scope prefix, and val-split keys read 'val/loss'."""
        tracker.log_training_step(1, {"loss": 1.0})
        tracker.log_training_step(1, {"loss": 2.0}, data_split="val")
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 3.0})
            tracker.log_training_step(1, {"loss": 4.0}, data_split="val")
        metrics = tracker.get_experiment_summary()["metrics"]
        assert metrics["loss"]["last"] == 1.0
        assert metrics["val/loss"]["last"] == 2.0
        assert metrics["builder:42/loss"]["last"] == 3.0
        assert metrics["builder:42/val/loss"]["last"] == 4.0

    def test_step_counts(self, tracker):
        """summary['steps'] counts the calls and names the first and last step."""
        for step in (3, 4, 5):
            tracker.log_training_step(step, {"loss": 1.0})
        assert tracker.get_experiment_summary()["steps"] == {"count": 3, "first": 3, "last": 5,
                                                                "splits": {"train": 3}}


class TestHistory:
    def test_full_history_pairs(self, tracker):
        """get_experiment_data()['metrics'] holds every [step, value] in call order."""
        for step in range(1, 6):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        data = tracker.get_experiment_data()
        assert data["metrics"]["loss"] == [[s, 1.0 / s] for s in range(1, 6)]
        assert data["metrics"]["delta_loss"][0][0] == 2
        assert data["experiment_id"] == tracker.experiment_id

    def test_history_keys_match_summary_keys(self, tracker):
        """History keys for scoped and split values are the same keys the summary uses."""
        tracker.log_training_step(1, {"loss": 2.0}, data_split="val")
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 3.0}, data_split="val")
        tracker.log_training_step(2, {"policy/loss": 0.5}, data_split="val")
        history = tracker.get_experiment_data()["metrics"]
        summary = tracker.get_experiment_summary()["metrics"]
        assert history["val/loss"] == [[1, 2.0]]
        assert history["builder:42/val/loss"] == [[1, 3.0]]
        assert set(history) == set(summary)

    def test_nan_survives_the_audit_round_trip(self, tracker):
        """A NaN value comes back from get_experiment_data() as a float NaN at its step."""
        tracker.log_training_step(1, {"loss": math.nan})
        ((step, value),) = tracker.get_experiment_data()["metrics"]["loss"]
        assert step == 1 and math.isnan(value)


class TestConfig:
    def test_positional_config_on_root_span(self, capture):
        """log_lezea_config(64, 4, 'SAC', hyperparameters=...) puts lezea.config.* on the root span."""
        tracker = capture.tracker("cfg", auto_start=True)
        tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr": 3e-4})
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        assert root.attributes["lezea.config.tasker_population_size"] == 64
        assert root.attributes["lezea.config.builder_population_size"] == 4
        assert root.attributes["lezea.config.algorithm_type"] == "SAC"
        assert root.attributes["lezea.config.hyperparameters.lr"] == 3e-4

    def test_config_event_correlated_with_root(self, capture):
        """The config becomes one lezea.config log record in the root span's trace, with its fields."""
        tracker = capture.tracker("cfg", auto_start=True)
        tracker.log_lezea_config(64, 4, "SAC", start_network_id="seed_001", seeds={"global": 123},
                                 initialization_scheme="kaiming_uniform")
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        (config,) = capture.logs("lezea.config")
        record = config.log_record
        assert record.trace_id == root.context.trace_id
        assert record.span_id == root.context.span_id
        assert record.attributes["lezea.config.start_network_id"] == "seed_001"
        assert record.attributes["lezea.config.seeds.global"] == 123
        assert record.attributes["lezea.experiment.id"] == tracker.experiment_id

    def test_config_in_audit_and_summary(self, tracker):
        """The config audit line and summary['config'] hold the call's values by name."""
        tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr": 3e-4, "gamma": 0.99})
        (line,) = audit(tracker, "config")
        assert line["data"] == {"tasker_population_size": 64, "builder_population_size": 4,
                                "algorithm_type": "SAC", "hyperparameters": {"lr": 3e-4, "gamma": 0.99}}
        assert tracker.get_experiment_summary()["config"]["algorithm_type"] == "SAC"


class TestCheckpointsAndDatasets:
    def test_checkpoint_size_and_hash(self, capture, tmp_path):
        """log_checkpoint on a real file records its size and sha256 in the audit and the log record."""
        path = tmp_path / "step_100.pt"
        content = bytes(range(256)) * 13
        path.write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        tracker = capture.tracker("ckpt", auto_start=True)
        tracker.log_checkpoint(str(path), step=100)
        assert capture.points("lezea.checkpoint.count")[0].value == 1
        assert capture.points("lezea.checkpoint.size")[0].value == len(content)
        (line,) = audit(tracker, "checkpoint")
        assert line["step"] == 100
        assert line["data"]["size_bytes"] == len(content) and line["data"]["sha256"] == digest
        assert line["data"]["exists"] is True
        tracker.finalize_experiment()
        (record,) = capture.logs("lezea.checkpoint")
        assert attrs(record)["lezea.checkpoint.sha256"] == digest
        assert attrs(record)["lezea.checkpoint.size_bytes"] == len(content)
        assert attrs(record)["lezea.checkpoint.path"] == str(path)
        assert attrs(record)["lezea.step"] == 100

    def test_missing_checkpoint_is_recorded_without_hash(self, tracker, lezea_warnings):
        """A checkpoint path that does not exist is still audited, marked missing, with one warning."""
        tracker.log_checkpoint("nope/missing.pt", step=1)
        (line,) = audit(tracker, "checkpoint")
        assert line["data"]["exists"] is False and line["data"]["sha256"] is None
        assert any("not found" in m for m in lezea_warnings())

    def test_dataset_version(self, capture, tmp_path):
        """log_dataset_version writes an audit line and a lezea.dataset log record with name and tag."""
        tracker = capture.tracker("ds", auto_start=True)
        tracker.log_dataset_version("imagenet", version_tag="v1.0", dataset_path="data/imagenet")
        (line,) = audit(tracker, "dataset_version")
        assert line["data"]["name"] == "imagenet" and line["data"]["version_tag"] == "v1.0"
        assert line["data"]["path"] == "data/imagenet"
        tracker.finalize_experiment()
        (record,) = capture.logs("lezea.dataset")
        assert attrs(record)["lezea.dataset.name"] == "imagenet"
        assert attrs(record)["lezea.dataset.version_tag"] == "v1.0"
        assert "imagenet" in record.log_record.body
        assert tracker.get_experiment_summary()["datasets"][0]["name"] == "imagenet"


class TestCommentsAndConclusion:
    def test_comment(self, capture):
        """log_comment is an audit line, a lezea.comment log record with the text as body, and a count."""
        tracker = capture.tracker("cmt", auto_start=True)
        tracker.log_comment("Builder population converged early; widen mutation space.")
        assert capture.points("lezea.comment.count", lezea__comment__kind="comment")[0].value == 1
        (line,) = audit(tracker, "comment")
        assert line["data"] == {"text": "Builder population converged early; widen mutation space."}
        summary = tracker.finalize_experiment()
        (record,) = capture.logs("lezea.comment")
        assert record.log_record.body == "Builder population converged early; widen mutation space."
        assert summary["comments"] == ["Builder population converged early; widen mutation space."]

    def test_conclusion(self, capture):
        """log_conclusion is an audit line, a lezea.conclusion log record and the summary's conclusion."""
        tracker = capture.tracker("concl", auto_start=True)
        tracker.log_conclusion("SAC beats baseline by 4.3%")
        assert capture.points("lezea.comment.count", lezea__comment__kind="conclusion")[0].value == 1
        (line,) = audit(tracker, "conclusion")
        assert line["data"]["text"] == "SAC beats baseline by 4.3%"
        summary = tracker.finalize_experiment()
        assert capture.logs("lezea.conclusion")[0].log_record.body == "SAC beats baseline by 4.3%"
        assert summary["conclusion"] == "SAC beats baseline by 4.3%"


class TestResults:
    def test_granular_rewards_become_gauges(self, tracker, capture):
        """tasker/builder rewards in log_results become lezea.reward gauges labelled by role and agent id."""
        tracker.log_results(tasker_rewards={"t0": 0.8, "t1": 0.2}, builder_rewards={"b0": 0.6}, step=10)
        rewards = {(p.attributes["lezea.agent.role"], p.attributes["lezea.agent.id"]): p.value
                   for p in capture.points("lezea.reward")}
        assert rewards == {("tasker", "t0"): 0.8, ("tasker", "t1"): 0.2, ("builder", "b0"): 0.6}
        (line,) = audit(tracker, "results")
        assert line["step"] == 10
        assert line["data"]["tasker_rewards"] == {"t0": 0.8, "t1": 0.2}
        assert line["data"]["builder_rewards"] == {"b0": 0.6}

    def test_unified_results_and_action_outputs(self, capture):
        """result_dict values become lezea.result gauges; action outputs become a lezea.results log record."""
        tracker = capture.tracker("res", auto_start=True)
        tracker.log_results(result_dict={"tasker_reward_avg": 0.71}, action_outputs={"action": [0, 1, 0]})
        (point,) = capture.points("lezea.result", lezea__metric__key="tasker_reward_avg")
        assert point.value == 0.71
        (line,) = audit(tracker, "results")
        assert line["data"]["action_outputs"] == {"action": [0, 1, 0]}
        summary = tracker.finalize_experiment()
        (record,) = capture.logs("lezea.results")
        assert json.loads(attrs(record)["lezea.action_outputs"]) == {"action": [0, 1, 0]}
        assert summary["results"] == {"tasker_reward_avg": 0.71}

    def test_log_reward(self, tracker, capture):
        """log_reward sets the agent's reward gauge (default role tasker) and summarises it per agent."""
        tracker.log_reward("t0", 0.5)
        tracker.log_reward("t0", 0.91, step=3)
        tracker.log_reward("b1", 0.2, agent_type="builder")
        (t0,) = capture.points("lezea.reward", lezea__agent__id="t0")
        assert t0.value == 0.91 and t0.attributes["lezea.agent.role"] == "tasker"
        b1 = capture.points("lezea.reward", lezea__agent__id="b1")[0]
        assert b1.attributes["lezea.agent.role"] == "builder"
        lines = audit(tracker, "reward")
        assert lines[1]["data"] == {"agent_id": "t0", "role": "tasker", "reward": 0.91}
        assert lines[1]["step"] == 3
        rewards = tracker.get_experiment_summary()["rewards"]
        assert rewards["tasker:t0"]["count"] == 2 and rewards["tasker:t0"]["best"] == 0.91

    def test_reward_inside_scope(self, tracker, capture):
        """A reward logged in tasker_scope carries that scope on its gauge."""
        with tracker.tasker_scope("A"):
            tracker.log_reward("t0", 0.3)
        (point,) = capture.points("lezea.reward", lezea__agent__id="t0")
        assert point.attributes["lezea.scope"] == "tasker:A"


class TestResources:
    def test_log_resource_units(self, tracker, capture):
        """log_resource: mem in MB becomes bytes, cpu and gpu percent become ratios, per component id."""
        tracker.log_resource("tasker#0", cpu=12.5, gpu=4.0, mem=512.0)
        (memory,) = capture.points("lezea.component.memory.usage", lezea__component__id="tasker#0")
        assert memory.value == 512 * MB and memory.unit == "By"
        (cpu,) = capture.points("lezea.component.cpu.utilization", lezea__component__id="tasker#0")
        assert cpu.value == pytest.approx(0.125) and cpu.unit == "1"
        (gpu,) = capture.points("lezea.component.gpu.utilization", lezea__component__id="tasker#0")
        assert gpu.value == pytest.approx(0.04)
        (line,) = audit(tracker, "resource")
        assert line["data"]["component_id"] == "tasker#0"
        assert line["data"]["memory_mb"] == 512.0 and line["data"]["cpu_percent"] == 12.5

    def test_a_figure_never_given_is_none_not_zero(self, tracker, lezea_warnings):
        """A refused value ("lots") is left out with one warning, and the summary says nothing of it rather
        than a 0 that reads as measured; the valid part of the call is kept."""
        tracker.log_resource("x", cpu="lots", gpu=40.0)
        tracker.log_resource("x", gpu=60.0)
        assert [m for m in lezea_warnings() if "cpu" in m] == ["log_resource: cpu is not a number: got str "
                                                               "'lots'; ignored"]
        totals = tracker.get_experiment_summary()["resources"]["x"]
        assert totals["gpu_percent_mean"] == 50.0 and totals["samples"] == 2
        assert totals["cpu_percent_mean"] is totals["cpu_percent_max"] is None
        assert totals["memory_mb_peak"] is totals["io_operations_total"] is None

    def test_component_resources(self, tracker, capture):
        """log_component_resources adds the component type and io operations; totals reach the summary."""
        tracker.log_component_resources(component_id="builder#1", component_type="builder", cpu_percent=20.0,
                                        memory_mb=256.0, gpu_util_percent=50.0, io_operations=1024)
        tracker.log_component_resources(component_id="builder#1", component_type="builder", cpu_percent=40.0,
                                        memory_mb=1024.0, gpu_util_percent=70.0, io_operations=16)
        (io,) = capture.points("lezea.component.io.operations", lezea__component__id="builder#1")
        assert io.value == 16 and io.attributes["lezea.component.type"] == "builder"
        (memory,) = capture.points("lezea.component.memory.usage", lezea__component__id="builder#1")
        assert memory.value == 1024 * MB
        lines = audit(tracker, "resource")
        assert lines[0]["data"]["component_type"] == "builder" and lines[0]["data"]["io_operations"] == 1024.0
        totals = tracker.get_experiment_summary()["resources"]["builder#1"]
        assert totals["cpu_percent_mean"] == 30.0 and totals["cpu_percent_max"] == 40.0
        assert totals["gpu_percent_mean"] == 60.0 and totals["memory_mb_peak"] == 1024.0
        assert totals["io_operations_total"] == 1040.0 and totals["samples"] == 2


class TestCostAndBusiness:
    def test_resource_cost_totals_accumulate(self, tracker, capture):
        """log_resource_cost calls add up per kind in the summary and each is a lezea.cost log record."""
        tracker.log_resource_cost(cpu_hours=3.2, mem_gb=11.7, io_bytes=5_000_000)
        tracker.log_resource_cost(cpu_hours=0.8, cost_eur=2.0)
        tracker.log_resource_cost(cost_eur=1.5)
        lines = audit(tracker, "resource_cost")
        assert lines[0]["data"] == {"cpu_hours": 3.2, "mem_gb": 11.7, "io_bytes": 5_000_000.0}
        kinds = {p.attributes["lezea.cost.kind"] for p in capture.points("lezea.cost")}
        assert kinds == {"cpu_hours", "mem_gb", "io_bytes", "cost_eur"}
        cost = tracker.get_experiment_summary()["cost"]
        assert cost["cpu_hours"] == pytest.approx(4.0)
        assert cost["cost_eur"] == pytest.approx(3.5)
        assert cost["total_eur"] == pytest.approx(3.5)
        assert cost["mem_gb"] == pytest.approx(11.7)

    def test_resource_cost_log_record(self, capture):
        """Each log_resource_cost is a lezea.cost log record with the amounts as attributes."""
        tracker = capture.tracker("costlog", auto_start=True)
        tracker.log_resource_cost(cpu_hours=3.2, io_bytes=5_000_000)
        tracker.finalize_experiment()
        (record,) = capture.logs("lezea.cost")
        assert attrs(record)["lezea.cost.cpu_hours"] == 3.2
        assert attrs(record)["lezea.cost.io_bytes"] == 5_000_000.0

    def test_business_metrics(self, tracker, capture):
        """log_business_metrics(resource_cost_eur=8.73) is a lezea.business gauge and the run's cost total."""
        tracker.log_business_metrics(resource_cost_eur=8.73, roi=1.5)
        (cost,) = capture.points("lezea.business", lezea__metric__key="resource_cost_eur")
        assert cost.value == 8.73
        assert capture.points("lezea.business", lezea__metric__key="roi")[0].value == 1.5
        (line,) = audit(tracker, "business_metrics")
        assert line["data"]["metrics"] == {"roi": 1.5, "resource_cost_eur": 8.73}
        summary = tracker.get_experiment_summary()
        assert summary["cost"]["total_eur"] == 8.73
        assert summary["business"]["resource_cost_eur"] == 8.73


class TestModificationTrees:
    def test_modification_tree(self, capture):
        """log_modification_tree counts modifications, gauges numeric stats and emits the tree as an event."""
        tracker = capture.tracker("mods", auto_start=True)
        mods = [{"op": "mutate", "node": 3}, {"op": "prune", "node": 7}, {"op": "grow", "node": 1}]
        tracker.log_modification_tree(5, modifications=mods, statistics={"mutations": 5, "note": "x"})
        assert capture.points("lezea.modification.count")[0].value == 3
        (stat,) = capture.points("lezea.modification.stat", lezea__stat__name="mutations")
        assert stat.value == 5 and stat.attributes["lezea.stat.source"] == "tree"
        assert not capture.points("lezea.modification.stat", lezea__stat__name="note")
        (line,) = audit(tracker, "modification_tree")
        assert line["step"] == 5
        assert line["data"]["modifications"] == mods
        assert line["data"]["statistics"] == {"mutations": 5.0, "note": "x"}
        tracker.finalize_experiment()
        (record,) = capture.logs("lezea.modification_tree")
        assert json.loads(attrs(record)["lezea.modifications"]) == mods
        assert attrs(record)["lezea.statistics.mutations"] == 5
        assert attrs(record)["lezea.step"] == 5

    def test_modification_tree_stats(self, tracker, capture):
        """log_modification_tree_stats gauges each number under source 'tree' and audits the stats."""
        tracker.log_modification_tree_stats({"accept_rate": 0.31, "depth": 4})
        stats = {p.attributes["lezea.stat.name"]: p for p in capture.points("lezea.modification.stat")}
        assert stats["accept_rate"].value == 0.31 and stats["depth"].value == 4
        assert stats["depth"].attributes["lezea.stat.source"] == "tree"
        (line,) = audit(tracker, "modification_tree_stats")
        assert line["data"]["statistics"] == {"accept_rate": 0.31, "depth": 4.0}

    def test_modification_stats(self, tracker, capture):
        """log_modification_stats gauges each count under source 'modification' and audits them."""
        tracker.log_modification_stats({"crossover": 12, "mutation": 33}, step=2)
        points = capture.points("lezea.modification.stat", lezea__stat__source="modification")
        assert {p.attributes["lezea.stat.name"]: p.value for p in points} == {"crossover": 12, "mutation": 33}
        (line,) = audit(tracker, "modification_stats")
        assert line["step"] == 2 and line["data"]["statistics"] == {"crossover": 12.0, "mutation": 33.0}


class TestDataCalls:
    def test_data_splits(self, capture):
        """log_data_splits gauges each split's size and audits the ids with a digest."""
        tracker = capture.tracker("splits", auto_start=True)
        tracker.log_data_splits(["a", "b", "c"], ["d", "e"], ["f"])
        sizes = {p.attributes["lezea.split.name"]: p.value for p in capture.points("lezea.data.split.size")}
        assert sizes == {"train": 3, "val": 2, "test": 1}
        (line,) = audit(tracker, "data_splits")
        assert line["data"]["train"]["ids"] == ["a", "b", "c"]
        assert line["data"]["val"]["count"] == 2
        assert len(line["data"]["test"]["sha256"]) == 64
        summary = tracker.finalize_experiment()
        assert summary["data"]["splits"] == {"train": 3, "val": 2, "test": 1}
        (record,) = capture.logs("lezea.data.splits")
        assert attrs(record)["lezea.data.train.count"] == 3
        assert attrs(record)["lezea.data.train.sha256"] == line["data"]["train"]["sha256"]

    def test_omitted_splits_are_not_reported(self, tracker, capture):
        """Splits the caller did not pass (None) are not reported as empty splits."""
        tracker.log_data_splits(["a", "b"])
        sizes = {p.attributes["lezea.split.name"]: p.value for p in capture.points("lezea.data.split.size")}
        assert sizes == {"train": 2}
        assert tracker.get_experiment_summary()["data"]["splits"] == {"train": 2}

    def test_data_usage(self, capture):
        """log_data_usage counts samples used, audits the ids and epoch, and emits a lezea.data.usage
        record."""
        tracker = capture.tracker("usage", auto_start=True)
        tracker.log_data_usage(sample_ids=["a", "b", "c"], epoch=3)
        tracker.log_data_usage(sample_ids=["a"], epoch=4)
        assert capture.points("lezea.data.samples.used")[0].value == 4
        first = audit(tracker, "data_usage")[0]
        assert first["data"]["sample_ids"] == ["a", "b", "c"]
        assert first["data"]["epoch"] == 3 and first["data"]["count"] == 3
        summary = tracker.finalize_experiment()
        assert summary["data"]["samples_used"] == 4
        record = capture.logs("lezea.data.usage")[0]
        assert attrs(record)["lezea.epoch"] == 3 and attrs(record)["lezea.data.count"] == 3
        assert not any(v == "a" for v in attrs(record).values())  # sample ids stay out of attributes

    def test_data_score(self, capture):
        """log_data_score records before-after as lezea.data.score and a log record naming the sample."""
        tracker = capture.tracker("score", auto_start=True)
        tracker.log_data_score(sample_id="a", before_loss=1.2, after_loss=0.9)
        (point,) = capture.points("lezea.data.score")
        assert point.value["count"] == 1 and point.value["sum"] == pytest.approx(0.3)
        assert "lezea.data.sample_id" not in point.attributes
        (line,) = audit(tracker, "data_score")
        assert line["data"]["sample_id"] == "a" and line["data"]["score"] == pytest.approx(0.3)
        tracker.finalize_experiment()
        (record,) = capture.logs("lezea.data.score")
        assert attrs(record)["lezea.data.sample_id"] == "a"
        assert attrs(record)["lezea.data.score"] == pytest.approx(0.3)

    def test_log_delta_loss(self, tracker, capture):
        """log_delta_loss(epoch, loss, prev_loss) gauges epoch, loss and their difference and audits all."""
        tracker.log_delta_loss(epoch=5, loss=0.44, prev_loss=0.53)
        assert capture.points("lezea.epoch.delta_loss")[0].value == pytest.approx(-0.09)
        assert capture.points("lezea.epoch.loss")[0].value == 0.44
        assert capture.points("lezea.training.epoch")[0].value == 5
        (line,) = audit(tracker, "delta_loss")
        assert line["data"]["epoch"] == 5 and line["data"]["prev_loss"] == 0.53
        assert line["data"]["delta_loss"] == pytest.approx(-0.09)

    def test_log_delta_loss_without_previous(self, tracker, capture):
        """Without prev_loss the audit has no delta and no delta gauge is reported."""
        tracker.log_delta_loss(epoch=1, loss=0.7)
        (line,) = audit(tracker, "delta_loss")
        assert line["data"]["delta_loss"] is None and line["data"]["loss"] == 0.7
        assert capture.points("lezea.epoch.delta_loss") == []


class TestRecommendations:
    def test_nan_loss_flagged_with_step(self, tracker):
        """A NaN loss is flagged as nonfinite_loss naming the first bad step."""
        for step in range(1, 6):
            tracker.log_training_step(step, {"loss": math.nan if step == 4 else 1.0 / step})
        (item,) = [i for i in rules(tracker)["nonfinite_loss"] if i["evidence"]["key"] == "loss"]
        assert item["severity"] == "critical"
        assert item["evidence"]["first_step"] == 4 and "step 4" in item["message"]

    def test_nan_loss_counted_as_nonfinite_metric(self, tracker, capture):
        """A NaN loss is not exported as a gauge value but counted in lezea.training.nonfinite."""
        tracker.log_training_step(1, {"loss": math.nan})
        assert capture.points("lezea.training.loss") == []
        (point,) = capture.points("lezea.training.nonfinite", lezea__metric__key="loss")
        assert point.value == 1

    def test_plateau_flagged(self, tracker):
        """About 40 flat loss values produce a loss_plateau advice for key 'loss'."""
        for step in range(40):
            tracker.log_training_step(step, {"loss": 0.5 + (0.0005 if step % 2 else 0.0)})
        assert "loss" in {i["evidence"]["key"] for i in rules(tracker).get("loss_plateau", [])}

    def test_steadily_decreasing_exponential_loss_not_flagged(self, tracker):
        """A loss that keeps falling geometrically gets no plateau, rising or non-finite advice."""
        for step in range(1, 101):
            tracker.log_training_step(step, {"loss": 2.0 * 0.97 ** step})
        assert not {"loss_plateau", "nonfinite_loss", "loss_rising"} & set(rules(tracker))

    def test_steadily_decreasing_linear_loss_not_flagged(self, tracker):
        """A loss falling by the same amount each step is not reported as a plateau (on any key)."""
        for step in range(1, 101):
            tracker.log_training_step(step, {"loss": 2.0 - 0.01 * step})
        assert not {"loss_plateau", "nonfinite_loss", "loss_rising"} & set(rules(tracker))

    def test_a_loss_that_climbs_away_from_its_best_is_rising_once(self, tracker):
        for step in range(1, 21):
            tracker.log_training_step(step, {"loss": 1.0 / step})  # best 0.05
        for step in range(21, 31):
            tracker.log_training_step(step, {"loss": 0.05 * (step - 18)})  # 0.15 ... 0.6
        (rising,) = rules(tracker)["loss_rising"]
        assert rising["evidence"]["best"] == 0.05 and rising["evidence"]["key"] == "loss"

    def test_noisy_minibatches_over_fifty_epochs_are_not_rising(self, tracker):
        """A healthy run: an epoch scope per epoch, the loss falling with minibatch noise and a spike now
        and then (the last value of a few epochs over twice their best): no loss_rising."""
        for epoch in range(50):
            with tracker.builder_scope(f"epoch-{epoch}"):
                for batch in range(10):
                    noise = 2.5 if batch in (3, 9) else 1.0 + 0.1 * (batch % 3)
                    tracker.log_training_step(epoch * 10 + batch + 1, {"loss": noise / (epoch + 1)})
        assert "loss_rising" not in rules(tracker)

    def test_cost_over_limit(self, capture):
        """With cost_limit_eur=5, logging cost_eur=8 gives cost_over_limit with both figures."""
        tracker = capture.tracker("cost", auto_start=True, cost_limit_eur=5)
        tracker.log_resource_cost(cost_eur=8)
        (item,) = rules(tracker)["cost_over_limit"]
        assert item["evidence"] == {"cost_eur": 8.0, "limit_eur": 5.0}
        tracker.finalize_experiment()

    def test_cost_under_limit_not_flagged(self, capture):
        """A cost below the limit gives no cost advice."""
        tracker = capture.tracker("cheap", auto_start=True, cost_limit_eur=5)
        tracker.log_resource_cost(cost_eur=2)
        assert "cost_over_limit" not in rules(tracker)
        tracker.finalize_experiment()

    def test_gpu_idle(self, tracker):
        """Repeated gpu_util_percent=5 for a component yields gpu_idle naming it."""
        for _ in range(4):
            tracker.log_component_resources("gpu-worker", "tasker", gpu_util_percent=5.0)
        (item,) = rules(tracker)["gpu_idle"]
        assert item["evidence"]["component"] == "gpu-worker"
        assert item["evidence"]["gpu_percent_mean"] == 5.0

    def test_busy_gpu_not_flagged(self, tracker):
        """A component whose GPU is busy gets no gpu_idle advice."""
        for _ in range(4):
            tracker.log_component_resources("gpu-worker", "tasker", gpu_util_percent=95.0)
        assert "gpu_idle" not in rules(tracker)


def test_no_plateau_while_the_validation_loss_of_each_epoch_still_falls(tracker):
    """The training loss is flat within 1 %, but each epoch scope's validation loss is lower than the one
    before: not a plateau. Once the validation loss stops improving, the flat training loss is one."""
    for epoch in range(1, 5):
        with tracker.algorithm_scope(f"epoch-{epoch}"):
            for step in range(1, 31):
                tracker.log_training_step((epoch - 1) * 30 + step, {"loss": 0.5 + 0.001 * (step % 3)})
            tracker.log_training_step(epoch * 30, {"loss": 2.0 - epoch / 4}, data_split="val")
    assert "loss_plateau" not in rules(tracker)
    with tracker.algorithm_scope("epoch-5"):
        for step in range(1, 31):
            tracker.log_training_step(120 + step, {"loss": 0.5 + 0.001 * (step % 3)})
        tracker.log_training_step(150, {"loss": 1.5}, data_split="val")  # worse than epoch 4's 1.0
    flagged = rules(tracker).get("loss_plateau", [])
    assert [item["evidence"]["key"] for item in flagged] == ["algorithm:epoch-5/loss"]
