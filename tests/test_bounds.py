"""Memory is bounded by the cardinality caps: keys and scopes past them cost nothing more.

The summary keeps the first ``LEZEA_MAX_METRIC_NAMES`` metric keys (as ``/metrics`` does), 1000
scope/split combinations per key, and 1000 scopes, phases, agents and components; the rest is
folded into one ``(other)`` entry per table and counted in ``summary["folded"]``. The audit keeps
every record.
"""

from __future__ import annotations

import gc
import json
import tracemalloc

from lezea_otel import ExperimentTracker
from lezea_otel.audit.record import Record
from lezea_otel.model.run_state import OTHER, RunState


def _traced_growth(work) -> int:
    """Bytes still allocated after ``work()`` that were allocated during it."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_metric_keys_past_the_cap_cost_no_memory_and_are_counted(tmp_path):
    """20,000 distinct keys: the summary holds 256 of them and one (other) entry; 15,000 keys logged
    after the cap grow the tracker by far less than the ~1 KB per key they used to cost."""
    tracker = ExperimentTracker("keys", runs_dir=tmp_path, quiet=True).start(prometheus_port=None)
    batches = [{f"k{step}_{j}": float(j) for j in range(1000)} for step in range(20)]
    for step in range(5):
        tracker.log_training_step(step, batches[step])

    def past_the_cap() -> None:
        for step in range(5, 20):
            tracker.log_training_step(step, batches[step])

    growth = _traced_growth(past_the_cap)
    summary = tracker.finalize_experiment()
    assert growth < 5_000_000, f"{growth / 1e6:.1f} MB for 15,000 keys past the cap"  # before: ~16 MB
    assert len(summary["metrics"]) == 257 and summary["metrics"][OTHER]["count"] == 20_000 - 256
    assert summary["folded"]["metrics"] == 20_000 - 256
    assert len(tracker.get_experiment_data()["metrics"]) == 20_000  # the audit has every key


def test_scopes_past_the_cap_are_folded_counted_and_kept_in_the_audit(tmp_path):
    """1,100 distinct builder scopes, each with a loss: 1000 keep their own entry, the other 100 are
    one (other) entry with their count and time; every scope is still in the audit."""
    tracker = ExperimentTracker("scopes", runs_dir=tmp_path, quiet=True).start(prometheus_port=None)
    for builder in range(1100):
        with tracker.builder_scope(str(builder)):
            tracker.log_training_step(builder + 1, {"loss": 1.0 / (builder + 1)})
    summary = tracker.finalize_experiment()
    scopes = summary["scopes"]
    assert len(scopes) == 1001 and scopes["builder:999"]["count"] == 1 and "builder:1000" not in scopes
    assert scopes[OTHER]["count"] == 100 and scopes[OTHER]["total_s"] > 0
    assert summary["folded"]["scopes"] == 100
    assert summary["folded"]["metrics"] == 100 and summary["metrics"][OTHER]["count"] == 100
    assert "builder:1099/loss" not in summary["metrics"] and summary["steps"]["count"] == 1100
    ends = [json.loads(line) for line in tracker.audit_path.read_text().splitlines()]
    assert sum(1 for event in ends if event["kind"] == "scope_end") == 1100


def test_run_state_memory_is_bounded_at_100000_keys_and_20000_scopes():
    """The issue's measurement on the run state itself: +96 MB at 100,000 keys and +1.5 KB per
    scope before; now what is past the caps costs nothing more."""
    state = RunState()
    keys = [Record("training_step", 0, step, (), 0, 0, {}, {f"k{step}_{j}": 0.5 for j in range(1000)})
            for step in range(100)]
    scopes = [(f"builder:{i}",) for i in range(20_000)]
    steps = [Record("training_step", 0, i, scope, 0, 0, {}, {"loss": 0.5}) for i, scope in enumerate(scopes)]
    ends = [Record("scope_end", 0, None, scope, 0, 0, {"level": "builder", "id": scope[0], "duration_s": 0.1})
            for scope in scopes]

    def apply() -> None:
        for record in keys:
            state.apply(record)
        for step, end in zip(steps, ends, strict=True):
            state.apply(step)
            state.apply(end)

    growth = _traced_growth(apply)
    assert growth < 3_000_000, f"{growth / 1e6:.1f} MB"  # before: ~125 MB
    assert len(state.metrics) == 257 and len(state.scopes) == 1001
    assert state.folded["metrics"] == 100_000 - 256 + 20_000 and state.folded["scopes"] == 19_000


def test_the_first_fold_of_each_table_warns_once_naming_the_call():
    """One warning per table, naming the call and the first entry folded; metric keys are warned
    about by /metrics, which folds the same keys."""
    warned: list[tuple[str, str, str]] = []
    state = RunState(warn=lambda call, problem, detail: warned.append((call, problem, detail)))
    for i in range(1003):
        state.apply(Record("phase", 0, None, (), 0, 0, {"name": f"p{i}", "duration_s": 0.01}))
        state.apply(Record("reward", 0, None, (), 0, 0,
                           {"role": "tasker", "agent_id": str(i), "reward": 1.0}))
    assert [(call, problem) for call, problem, _ in warned] == [
        ("span", "more than 1000 distinct phases in the summary"),
        ("log_reward", "more than 1000 distinct rewards in the summary"),
    ]
    assert "'p1000' and later ones are folded" in warned[0][2]
    assert state.folded["phases"] == state.folded["rewards"] == 3


def test_a_run_rebuilt_from_its_audit_folds_with_the_cap_it_ran_with():
    """The CLI rebuilds a run through the same run state: the cap the run recorded at start applies."""
    state = RunState()
    state.apply(Record("experiment_start", 0, None, (), 0, 0, {"max_metric_names": 2}))
    state.apply(Record("training_step", 0, 1, (), 0, 0, {}, {"a": 1.0, "b": 2.0, "c": 3.0}))
    assert set(state.metrics) == {"a", "b", OTHER} and state.folded["metrics"] == 1
