"""End to end with a real Prometheus 3 (built from its Go module by scripts/stack-bin.sh, started with the
shipped flags and prometheus.yaml): it scrapes the run's /metrics, and PromQL finds the training metrics by
experiment id."""

from __future__ import annotations

import pytest

from .stack import free_port


def test_promql_finds_the_run(capture, prometheus):
    """Training values, phase histograms and target_info are queryable by lezea_experiment_id."""
    port = free_port()
    tracker = capture.tracker("e2e")
    tracker.start(prometheus_port=port)
    server = prometheus(port)
    with tracker.builder_scope("42"):
        for step in range(1, 6):
            with tracker.span("forward"):
                tracker.log_training_step(step, {"loss": 1.0 / step}, data_split="train")
    selector = f'lezea_experiment_id="{tracker.experiment_id}"'
    (loss,) = server.wait_for(f'lezea_training_loss{{{selector}}}')
    assert float(loss["value"][1]) == pytest.approx(0.2)
    assert loss["metric"]["lezea_scope"] == "builder:42" and loss["metric"]["lezea_data_split"] == "train"
    (count,) = server.wait_for(
        f'lezea_phase_duration_seconds_count{{{selector}, lezea_phase_name="forward"}}')
    assert float(count["value"][1]) == 5
    assert server.wait_for(f'lezea_training_step{{{selector}}}')[0]["value"][1] == "5"
    info = server.wait_for('target_info{job="lezea"}')[0]["metric"]
    assert info["lezea_experiment_id"] == tracker.experiment_id and info["service_name"] == "lezea"
    tracker.finalize_experiment()
