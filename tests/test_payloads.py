"""Each record kind's declared payload (``audit/payloads.py``) is what the writers actually write."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest

from lezea_otel.audit.payloads import PAYLOADS, payload_problems
from lezea_otel.audit.reader import read_events
from lezea_otel.audit.record import Kind


def type_problems(value: Any, declared: Any, where: str) -> list[str]:
    """Where ``value`` (JSON as the audit reads it back) is not of the ``declared`` type: an int is a float
    (PEP 484), a float no int, a bool neither. A TypedDict's keys are :func:`payload_problems`' business."""
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if declared is Any:
        return []
    if typing.is_typeddict(declared):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is no object"]
        hints = typing.get_type_hints(declared)
        return [p for key, item in value.items() if key in hints
                for p in type_problems(item, hints[key], f"{where}.{key}")]
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin in (typing.Union, types.UnionType):
        found = [type_problems(value, option, where) for option in args]
        return [] if any(not f for f in found) else [f"{where}: {value!r} is none of {declared}"]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is no object"]
        return [p for key, item in value.items() for p in type_problems(item, args[1], f"{where}[{key!r}]")]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is no list"]
        return [p for index, item in enumerate(value)
                for p in type_problems(item, args[0], f"{where}[{index}]")]
    expected = type(None) if declared is None else declared
    if type(value) is expected or (declared is float and type(value) is int):
        return []
    return [f"{where}: {value!r} is a {type(value).__name__}, not {declared}"]


def test_every_kind_has_a_payload_type() -> None:
    """A new kind without a declared payload fails here."""
    assert set(PAYLOADS) == set(Kind)
    assert all(typing.is_typeddict(payload) for payload in PAYLOADS.values())


def test_a_run_through_every_call_writes_only_declared_payloads(tmp_path, monkeypatch, request) -> None:
    """Every spec call, scopes, phases (with attributes, raising, truncated by the finalize), all three
    exporter-free kinds and the exporter's resource totals: each line's data fits its declaration, keys and
    value types, and every kind appears. The exporter runs in a thread: ``resource_totals`` is written only
    where an exporter observes the trainer. On a (doubled) GPU: phases get their GPU time, and a training
    step the CUDA allocator's reading."""
    from lezea_otel.tracker import ExperimentTracker, NetworkType

    from .fake_cuda import installed

    on_gpu = installed()
    on_gpu.__enter__().allocate(2**20)
    request.addfinalizer(lambda: on_gpu.__exit__(None, None, None))
    monkeypatch.setenv("LEZEA_EXPORTER", "thread")
    monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")
    checkpoint = tmp_path / "step_2.pt"
    checkpoint.write_bytes(b"weights")
    (tmp_path / "data").mkdir()
    tracker = ExperimentTracker("payloads", purpose="declared payloads", tags=["a", "b"], runs_dir=tmp_path,
                                quiet=True)
    tracker.start(prometheus_port=None)
    tracker.log_lezea_config(tasker_population_size=64, builder_population_size=4, algorithm_type="SAC",
                             start_network_id="net-0", hyperparameters={"lr": 3e-4, "sched": {"warmup": 10}},
                             seeds={"torch": 1, "numpy": 2}, initialization_scheme="xavier")
    tracker.log_data_splits(["s1", "s2", "s3"], [4, 5], ["s6"])
    tracker.log_dataset_version("imagenet", version_tag="v1.0", dataset_path=str(tmp_path / "data"),
                                metadata={"rows": 10})
    tracker.log_dataset_version("synthetic")
    tracker.define_metric("acc", goal="max", summary="best")
    tracker.log_training_step(1, {"loss": 0.9, "acc": 0.5}, data_split="train")
    tracker.log_training_step(2, {"loss": 0.8, "acc": 0.6}, data_split="train")
    with tracker.builder_scope("42"), tracker.tasker_scope("A"), tracker.algorithm_scope("sac"), \
            tracker.network_scope("n1", NetworkType.BUILDER), tracker.layer_scope("fc1"):
        tracker.log_training_step(3, {"loss": 0.7})
        tracker.log_reward("t0", 0.91)
        tracker.log_reward("b0", 0.4, step=3, agent_type="builder")
    with tracker.span("forward", lr=0.1, shape={"batch": 32}):
        tracker.log_data_usage(sample_ids=["s1", "s2"], epoch=1)
    with pytest.raises(ValueError), tracker.span("backward"):
        raise ValueError("exploded")
    tracker.log_modification_tree(3, modifications=[{"op": "add", "node": 1}], statistics={"mutations": 5})
    tracker.log_modification_tree_stats({"accept_rate": 0.31, "depth": 4, "note": "ok"}, step=3)
    tracker.log_modification_stats({"crossover": 12, "mutation": 33})
    tracker.log_data_score(sample_id="s1", before_loss=1.2, after_loss=0.9, step=3)
    tracker.log_data_score(sample_id=7, before_loss=1.2, after_loss=None)
    tracker.log_delta_loss(epoch=5, loss=0.44, prev_loss=0.53)
    tracker.log_delta_loss(epoch=6, loss=0.40)
    tracker.log_resource("tasker#0", cpu=12.3, gpu=4.1, mem=512.0)
    tracker.log_component_resources("builder#0", component_type="builder", cpu_percent=50.0, memory_mb=256.0,
                                    gpu_util_percent=10.0, io_operations=7)
    tracker.log_checkpoint(str(checkpoint), step=2, metadata={"epoch": 1})
    tracker.log_results(result_dict={"tasker_reward_avg": 0.71})
    tracker.log_results(tasker_rewards={"t0": 0.8}, builder_rewards={"b0": 0.6},
                        action_outputs={"action": [0, 1, 0]}, step=10)
    tracker.log_resource_cost(cpu_hours=3.2, mem_gb=11.7, io_bytes=5_000_000, gpu_hours=1.5, cost_eur=2.0)
    tracker.log_business_metrics(resource_cost_eur=8.73, revenue_eur=20.0)
    tracker.log_comment("Builder population converged early.")
    tracker.log_conclusion("SAC + curriculum v2 beats baseline.")
    assert tracker.get_experiment_summary()["steps"]["count"] == 3
    assert tracker.get_experiment_data()["problems"] == []
    assert isinstance(tracker.get_recommendations(), list)
    tracker._sample_observers()  # as the exporter's sampler does every interval; a short run may end first
    left_open = tracker.builder_scope("open")
    left_open.__enter__()  # still open at the finalize: its scope_end is truncated
    tracker.end()
    left_open.__exit__(None, None, None)

    events = list(read_events(tracker.audit_path))
    assert [p for e in events for p in payload_problems(e["kind"], e["data"])] == []
    assert [p for e in events for p in type_problems(e["data"], PAYLOADS[Kind(e["kind"])], e["kind"])] == []
    assert {e["kind"] for e in events} == set(Kind)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_kind.setdefault(event["kind"], []).append(event["data"])
    assert {"lezea.network.type": "builder", "level": "network", "id": "n1"} in by_kind["scope_start"]
    assert [d.get("truncated") for d in by_kind["scope_end"]][-1] == "finalize_experiment"
    phases = {d["name"]: d for d in by_kind["phase"]}
    assert phases["forward"]["attributes"] == {"lr": 0.1, "shape.batch": 32}
    assert phases["backward"]["exception"]["type"] == "ValueError"
    assert by_kind["training_step"][-1]["metrics"] == {
        "builder:42/tasker:A/algorithm:sac/network:n1/layer:fc1/loss": 0.7}
    assert by_kind["resource_totals"][0]["observed"]["samples"] >= 1


def test_payload_problems_names_a_missing_and_an_undeclared_key() -> None:
    """A reward without its number and with a key no writer writes: both named, nothing raised."""
    assert payload_problems("reward", {"agent_id": "t0", "role": "tasker", "reward": 0.5}) == []
    assert payload_problems(Kind.REWARD, {"agent_id": "t0", "role": "tasker", "rewrad": 0.5}) == [
        "reward data lacks the required key 'reward'", "reward data holds the undeclared key 'rewrad'"]
    assert payload_problems("training_step", {"data_split": "val"}) == [
        "training_step data lacks the required key 'metrics'"]


def test_payload_problems_reports_an_unknown_kind_or_data_without_raising() -> None:
    """An audit from another version (an unknown kind, data that is no object) is reported, not raised on."""
    assert payload_problems("telemetry", {}) == ["'telemetry' is not a record kind"]
    assert payload_problems("comment", ["text"]) == ["comment data is a list, not an object"]  # type: ignore[arg-type]
    assert payload_problems("config", {}) == []  # every config key is optional
