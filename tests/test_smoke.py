"""The spec's Minimal End-to-End Example runs as written, apart from the import."""

from __future__ import annotations

import json


def test_minimal_end_to_end_example(tmp_path, monkeypatch):
    """The example from the connector spec runs and leaves an audit with every call in order."""
    from lezea_otel.tracker import ExperimentTracker

    tracker = ExperimentTracker("Demo", purpose="sanity", auto_start=True)
    tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr": 3e-4})
    for step in range(1, 6):
        tracker.log_training_step(step, {"loss": 1.0 / step})
    tracker.log_reward("t0", 0.77)
    tracker.finalize_experiment()

    audit = tmp_path / "runs" / tracker.experiment_id / "events.jsonl"
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "experiment_start" and kinds[-1] == "experiment_end"
    assert kinds.count("training_step") == 5
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for name in ("spans.jsonl", "metrics.jsonl", "logs.jsonl"):
        assert (audit.parent / "otlp" / name).stat().st_size > 0
