"""The public surface: imports, NetworkType, and the spec's signatures."""

from __future__ import annotations

import inspect

import lezea_otel
from lezea_otel.tracker import ExperimentTracker, NetworkType

SPEC_PARAMETERS = {
    "__init__": ["experiment_name", "purpose", "tags", "auto_start", "async_mode"],
    "start": ["strict", "prometheus_port"],
    "finalize_experiment": [],
    "end": [],
    "builder_scope": ["builder_id"],
    "tasker_scope": ["tasker_id"],
    "algorithm_scope": ["algorithm_id"],
    "network_scope": ["network_id"],
    "layer_scope": ["layer_id"],
    "log_lezea_config": ["tasker_population_size", "builder_population_size", "algorithm_type", "start_network_id",
                         "hyperparameters", "seeds", "initialization_scheme"],
    "log_training_step": ["step", "metrics", "data_split"],
    "log_modification_tree": ["step", "modifications", "statistics"],
    "log_modification_tree_stats": ["statistics"],
    "log_modification_stats": ["statistics"],
    "log_data_splits": ["train_ids", "val_ids", "test_ids"],
    "log_data_usage": ["sample_ids", "epoch"],
    "log_data_score": ["sample_id", "before_loss", "after_loss"],
    "log_delta_loss": ["epoch", "loss", "prev_loss"],
    "log_resource": ["component_id", "cpu", "gpu", "mem"],
    "log_component_resources": ["component_id", "component_type", "cpu_percent", "memory_mb", "gpu_util_percent",
                                "io_operations"],
    "log_checkpoint": ["checkpoint_path", "step"],
    "log_dataset_version": ["dataset_name", "version_tag", "dataset_path"],
    "log_results": ["result_dict", "tasker_rewards", "builder_rewards", "action_outputs", "step"],
    "log_reward": ["agent_id", "reward"],
    "log_resource_cost": ["cpu_hours", "mem_gb", "io_bytes"],
    "log_comment": ["comment"],
    "log_conclusion": ["conclusion"],
    "log_business_metrics": ["resource_cost_eur"],
    "get_experiment_summary": [],
    "get_experiment_data": [],
    "get_recommendations": [],
}


class TestPublicSurface:
    def test_both_imports_give_the_same_class(self):
        """`from lezea_otel import ExperimentTracker` and the spec's module path are one class."""
        assert lezea_otel.ExperimentTracker is ExperimentTracker

    def test_exports_are_sorted_and_complete(self):
        """__all__ lists exactly the public names, sorted."""
        public = sorted(n for n, v in vars(lezea_otel).items() if not n.startswith("_") and not inspect.ismodule(v))
        assert lezea_otel.__all__ == sorted(lezea_otel.__all__, key=str.casefold)
        assert sorted(set(lezea_otel.__all__) - {"__version__"}) == public

    def test_network_type_members(self):
        """NetworkType has TASKER, BUILDER and HYBRID."""
        assert [m.name for m in NetworkType] == ["TASKER", "BUILDER", "HYBRID"]

    def test_spec_signatures(self):
        """Every spec call exists and takes the spec's parameters in the spec's order."""
        for name, expected in SPEC_PARAMETERS.items():
            parameters = list(inspect.signature(getattr(ExperimentTracker, name)).parameters)[1:]
            assert parameters[:len(expected)] == expected, name
        assert inspect.signature(ExperimentTracker.start).parameters["prometheus_port"].default == 8000
        init = inspect.signature(ExperimentTracker.__init__).parameters
        assert (init["purpose"].default, init["tags"].default, init["auto_start"].default,
                init["async_mode"].default) == ("", None, False, False)
