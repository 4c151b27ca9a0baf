"""The public surface of the connector spec: imports, NetworkType, names and signatures."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import uuid

import orjson
import pytest

import lezea_otel

# Parameter names (in order) each call takes per the LeZeA connector spec; a call may add more after them.
SPEC = {
    "__init__": ["experiment_name", "purpose", "tags", "auto_start", "async_mode"],
    "start": ["strict", "prometheus_port"],
    "finalize_experiment": [],
    "end": [],
    "builder_scope": None, "tasker_scope": None, "algorithm_scope": None, "network_scope": None,
    "layer_scope": None,
    "log_lezea_config": ["tasker_population_size", "builder_population_size", "algorithm_type",
                         "start_network_id", "hyperparameters", "seeds", "initialization_scheme"],
    "log_training_step": ["step", "metrics", "data_split"],
    "log_modification_tree": ["step", "modifications", "statistics"],
    "log_modification_tree_stats": None,
    "log_modification_stats": None,
    "log_data_splits": ["train_ids", "val_ids", "test_ids"],
    "log_data_usage": ["sample_ids", "epoch"],
    "log_data_score": ["sample_id", "before_loss", "after_loss"],
    "log_delta_loss": ["epoch", "loss", "prev_loss"],
    "log_resource": ["component_id", "cpu", "gpu", "mem"],
    "log_component_resources": ["component_id", "component_type", "cpu_percent", "memory_mb",
                                "gpu_util_percent", "io_operations"],
    "log_checkpoint": None,
    "log_dataset_version": ["dataset_name", "version_tag", "dataset_path"],
    "log_results": ["result_dict", "tasker_rewards", "builder_rewards", "action_outputs", "step"],
    "log_reward": None,
    "log_resource_cost": ["cpu_hours", "mem_gb", "io_bytes"],
    "log_comment": None,
    "log_conclusion": None,
    "log_business_metrics": ["resource_cost_eur"],
    "get_experiment_summary": [],
    "get_experiment_data": [],
    "get_recommendations": [],
}
"""``None``: the spec only calls it positionally, so only the number of positional arguments matters."""

SPEC_POSITIONAL = {"builder_scope": 1, "tasker_scope": 1, "algorithm_scope": 1, "network_scope": 1,
                   "layer_scope": 1, "log_modification_tree_stats": 1, "log_modification_stats": 1,
                   "log_checkpoint": 1, "log_reward": 2, "log_comment": 1, "log_conclusion": 1}


@pytest.fixture(autouse=True)
def _no_default_prometheus_port(monkeypatch):
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")


def parameters(name: str) -> list[inspect.Parameter]:
    from lezea_otel.tracker import ExperimentTracker

    return list(inspect.signature(getattr(ExperimentTracker, name)).parameters.values())[1:]


class TestImports:
    def test_top_level_import(self):
        """`from lezea_otel import ExperimentTracker` works."""
        from lezea_otel import ExperimentTracker

        assert inspect.isclass(ExperimentTracker)

    def test_tracker_module_import_is_the_same_class(self):
        """`from lezea_otel.tracker import ExperimentTracker, NetworkType` gives the same objects."""
        from lezea_otel.tracker import ExperimentTracker, NetworkType

        assert ExperimentTracker is lezea_otel.ExperimentTracker
        assert NetworkType is lezea_otel.NetworkType

    def test_all_is_sorted_and_lists_the_public_names(self):
        """lezea_otel.__all__ is sorted and names exactly the public objects."""
        exported = lezea_otel.__all__
        assert exported == sorted(exported, key=str.casefold)
        assert len(set(exported)) == len(exported)
        public = {name for name, value in vars(lezea_otel).items()
                  if not name.startswith("_") and not inspect.ismodule(value)}
        assert set(exported) == public | {"__version__"}
        for name in exported:
            assert getattr(lezea_otel, name) is not None
        assert isinstance(lezea_otel.__version__, str) and lezea_otel.__version__

    def test_config_error_is_a_value_error(self):
        """LezeaConfigError can be caught as ValueError."""
        assert issubclass(lezea_otel.LezeaConfigError, ValueError)


class TestNetworkType:
    def test_exactly_three_members(self):
        """NetworkType has exactly TASKER, BUILDER and HYBRID."""
        from lezea_otel.tracker import NetworkType

        assert {member.name for member in NetworkType} == {"TASKER", "BUILDER", "HYBRID"}
        assert len(NetworkType) == 3

    def test_network_type_labels_the_scope(self, capture):
        """network_scope(id, NetworkType.BUILDER) marks the scope span with the network type."""
        from lezea_otel.tracker import NetworkType

        tracker = capture.tracker("net", auto_start=True)
        with tracker.network_scope("n1", NetworkType.BUILDER):
            tracker.log_training_step(1, {"loss": 0.5})
        with tracker.network_scope("n2", "hybrid"):
            pass
        tracker.finalize_experiment()
        types = {s.attributes["lezea.scope.id"]: s.attributes["lezea.network.type"]
                 for s in capture.spans("network")}
        assert types == {"n1": "builder", "n2": "hybrid"}


class TestSignatures:
    @pytest.mark.parametrize("name", sorted(SPEC))
    def test_spec_call_has_the_spec_parameters(self, name):
        """Each spec call exists and accepts the spec's parameter names, in the spec's order."""
        from lezea_otel.tracker import ExperimentTracker

        assert callable(getattr(ExperimentTracker, name, None)), name
        params = parameters(name)
        expected = SPEC[name]
        if expected is None:
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            assert len(positional) >= SPEC_POSITIONAL[name]
            return
        named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        assert named[:len(expected)] == expected
        assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params[:len(expected)])

    def test_spec_defaults(self):
        """Defaults as the spec writes them: purpose='', tags=None, auto_start/async_mode False, port 8000."""
        init = {p.name: p.default for p in parameters("__init__")}
        defaults = (init["purpose"], init["tags"], init["auto_start"], init["async_mode"])
        assert defaults == ("", None, False, False)
        start = {p.name: p.default for p in parameters("start")}
        assert start == {"strict": None, "prometheus_port": 8000}
        assert {p.name: p.default for p in parameters("log_training_step")}["data_split"] is None

    def test_scopes_exist(self):
        """All five scopes of the spec are there."""
        from lezea_otel.tracker import ExperimentTracker

        for level in ("builder", "tasker", "algorithm", "network", "layer"):
            assert callable(getattr(ExperimentTracker, f"{level}_scope"))


class TestSpecExamples:
    def test_every_spec_example_runs_without_a_warning(self, capture, tmp_path, lezea_warnings):
        """The spec's examples, verbatim, run silently and land in the summary."""
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "step_100.pt").write_bytes(b"0" * 128)
        tracker = capture.tracker("Demo", purpose="sanity", auto_start=True)
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 0.42})
        tracker.log_lezea_config(
            tasker_population_size=128,
            builder_population_size=8,
            algorithm_type="SAC",
            start_network_id="seed_001",
            hyperparameters={"lr": 3e-4, "gamma": 0.99},
            seeds={"global": 123, "layer": 456},
            initialization_scheme="kaiming_uniform",
        )
        tracker.log_training_step(2, {"loss": 0.731, "acc": 0.84}, data_split="train")
        tracker.log_modification_tree(2, modifications=[{"op": "add_layer"}], statistics={"mutations": 5})
        tracker.log_modification_tree_stats({"accept_rate": 0.31, "depth": 4})
        tracker.log_modification_stats({"crossover": 12, "mutation": 33})
        tracker.log_data_splits(["a", "b"], ["c"], ["d"])
        tracker.log_data_usage(sample_ids=["a", "b", "c"], epoch=3)
        tracker.log_data_score(sample_id="a", before_loss=1.2, after_loss=0.9)
        tracker.log_delta_loss(epoch=5, loss=0.44, prev_loss=0.53)
        tracker.log_resource("tasker#0", cpu=12.3, gpu=4.1, mem=512.0)
        tracker.log_component_resources(
            component_id="tasker#0", component_type="tasker",
            cpu_percent=12.3, memory_mb=512.0, gpu_util_percent=4.1, io_operations=1024,
        )
        tracker.log_checkpoint("checkpoints/step_100.pt", step=100)
        tracker.log_dataset_version("imagenet", version_tag="v1.0", dataset_path="data/imagenet")
        tracker.log_results(result_dict={"tasker_reward_avg": 0.71})
        tracker.log_results(tasker_rewards={"t0": 0.8}, builder_rewards={"b0": 0.6},
                            action_outputs={"action": [0, 1, 0]}, step=10)
        tracker.log_reward("t0", 0.91)
        tracker.log_resource_cost(cpu_hours=3.2, mem_gb=11.7, io_bytes=5_000_000)
        tracker.log_comment("Builder population converged early; widen mutation space.")
        tracker.log_conclusion("SAC + curriculum v2 beats baseline by 4.3% with lower variance.")
        tracker.log_business_metrics(resource_cost_eur=8.73)
        assert isinstance(tracker.get_recommendations(), list)
        assert tracker.get_experiment_data()["experiment_id"] == tracker.experiment_id
        summary = tracker.finalize_experiment()
        assert lezea_warnings() == []
        assert summary["metrics"]["builder:42/loss"]["last"] == 0.42
        assert summary["metrics"]["train/acc"]["last"] == 0.84
        assert summary["config"]["algorithm_type"] == "SAC"
        assert summary["checkpoints"][0]["size_bytes"] == 128 and summary["checkpoints"][0]["step"] == 100
        assert summary["rewards"]["tasker:t0"]["last"] == 0.91
        assert summary["comments"] == ["Builder population converged early; widen mutation space."]
        assert summary["conclusion"].startswith("SAC + curriculum v2")
        assert summary["resources"]["tasker#0"]["memory_mb_peak"] == 512.0
        assert summary["cost"]["total_eur"] == 8.73

    def test_minimal_end_to_end_example(self, tmp_path, monkeypatch):
        """The spec's minimal example, with only LEZEA_RUNS_DIR set, leaves a finished run on disk."""
        from lezea_otel.tracker import ExperimentTracker

        monkeypatch.setenv("LEZEA_RUNS_DIR", str(tmp_path / "runs"))
        tracker = ExperimentTracker("Demo", purpose="sanity", auto_start=True)
        tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr": 3e-4})
        for step in range(1, 6):
            tracker.log_training_step(step, {"loss": 1.0 / step})
        tracker.log_reward("t0", 0.77)
        summary = tracker.finalize_experiment()
        assert uuid.UUID(tracker.experiment_id).version == 4
        assert tracker.audit_path == tmp_path / "runs" / tracker.experiment_id / "events.jsonl"
        assert summary["status"] == "finished" and summary["steps"]["count"] == 5
        assert summary["metrics"]["loss"]["best"] == 0.2
        again = tracker.end()  # the alias, after finalize: the same run, not a second end
        assert again["status"] == "finished" and again["steps"] == summary["steps"]
        assert tracker.audit_path.read_text().count('"kind":"experiment_end"') == 1

    def test_start_returns_the_tracker_and_second_start_is_a_no_op(self, capture):
        """start() returns the tracker; calling it twice starts one run, not two."""
        tracker = capture.tracker("twice")
        assert tracker.start(prometheus_port=None) is tracker
        assert tracker.start(prometheus_port=None) is tracker
        tracker.finalize_experiment()
        assert len(capture.spans("experiment")) == 1

    def test_experiment_ids_are_unique(self, capture):
        """Each tracker gets its own UUID4 experiment_id and its own run folder."""
        from lezea_otel.tracker import ExperimentTracker

        trackers = [ExperimentTracker(f"t{i}", runs_dir=capture.runs_dir, quiet=True) for i in range(3)]
        assert len({t.experiment_id for t in trackers}) == 3
        assert len({t.audit_path for t in trackers}) == 3
        for tracker in trackers:
            uuid.UUID(tracker.experiment_id)
            tracker.finalize_experiment()


SPEC_EXAMPLE = '''
from lezea_mlops.tracker import ExperimentTracker

tracker = ExperimentTracker("Demo", purpose="sanity", auto_start=True)
tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr":3e-4})
for step in range(1, 6):
    tracker.log_training_step(step, {"loss": 1.0/step})
tracker.log_reward("t0", 0.77)
tracker.finalize_experiment()
'''
"""The connector spec's "Minimal End-to-End Example", verbatim, its import line included."""


def test_the_spec_example_runs_unchanged_with_its_own_import(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LEZEA_"))}
    done = subprocess.run([sys.executable, "-c", SPEC_EXAMPLE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (audit,) = (tmp_path / "runs").glob("*/events.jsonl")
    kinds = [json.loads(line)["kind"] for line in audit.read_text().splitlines()]
    assert kinds.count("training_step") == 5 and kinds[-1] == "experiment_end"
    from lezea_mlops import ExperimentTracker as Exported
    from lezea_mlops import NetworkType
    from lezea_mlops.tracker import ExperimentTracker as FromTracker
    assert Exported is FromTracker is lezea_otel.ExperimentTracker and NetworkType is lezea_otel.NetworkType


def test_the_summary_is_plain_json_for_orjson(capture):
    """ML code serialises with orjson, which takes ``str`` keys only (no ``StrEnum`` subclass)."""
    tracker = capture.tracker("orjson", auto_start=True)
    with tracker.builder_scope("1"), tracker.span("forward"):
        tracker.log_training_step(1, {"loss": 0.5})
    summary = tracker.finalize_experiment()
    assert json.loads(orjson.dumps(summary))["calls"]["training_step"] == 1
