"""A synthetic training run that exercises every call of the connector spec.

``python -m lezea_otel.cli.demo [--steps N] [--endpoint URL]``: local mode unless an endpoint is
given (or configured through ``OTEL_EXPORTER_OTLP_ENDPOINT``). One phase (``data_loading``) is
deliberately slow every tenth step, so the slow-phase views have something to find.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

from lezea_otel.tracker import ExperimentTracker, NetworkType


def run(steps: int = 60, endpoint: str | None = None, runs_dir: str | None = None,
        prometheus_port: int | None = None, seed: int = 7) -> ExperimentTracker:
    rng = random.Random(seed)
    tracker = ExperimentTracker("demo", purpose="exercise every tracker call", tags=["demo", "synthetic"],
                                endpoint=endpoint, runs_dir=runs_dir)
    tracker.start(prometheus_port=prometheus_port)
    tracker.log_lezea_config(64, 4, "SAC", start_network_id="seed_001",
                             hyperparameters={"lr": 3e-4, "gamma": 0.99, "batch_size": 32},
                             seeds={"global": seed, "layer": 456}, initialization_scheme="kaiming_uniform")
    samples = [f"s{i}" for i in range(1000)]
    tracker.log_data_splits(samples[:800], samples[800:900], samples[900:])
    tracker.log_dataset_version("synthetic-blobs", version_tag="v1.0", dataset_path="data/synthetic")
    previous_epoch_loss = None
    for builder in ("b0", "b1"):
        with tracker.builder_scope(builder), tracker.network_scope(f"net-{builder}", NetworkType.BUILDER):
            for step in range(1, steps + 1):
                with tracker.span("data_loading"):
                    time.sleep(0.05 if step % 10 == 0 else 0.001)
                with tracker.span("forward"), tracker.layer_scope("encoder"):
                    time.sleep(0.002)
                with tracker.span("backward"):
                    time.sleep(0.003)
                loss = 2.0 * math.exp(-step / (steps / 3)) + rng.uniform(0, 0.05)
                tracker.log_training_step(step, {"loss": loss, "acc": 1 - loss / 2.5, "lr": 3e-4,
                                                 "grad_norm": rng.uniform(0.5, 1.5)}, data_split="train")
                if step % 10 == 0:
                    tracker.log_training_step(step, {"loss": loss * 1.1}, data_split="val")
                    tracker.log_component_resources(f"{builder}/trainer", "builder",
                                                    cpu_percent=rng.uniform(60, 95), memory_mb=2048 + step,
                                                    gpu_util_percent=rng.uniform(40, 90),
                                                    io_operations=100 * step)
                    tracker.log_data_usage(rng.sample(samples[:800], 32), epoch=step // 10)
                    tracker.log_data_score(rng.choice(samples), before_loss=loss + 0.1, after_loss=loss)
            tracker.log_modification_tree(steps,
                                          modifications=[{"op": "mutate", "layer": 2}, {"op": "prune"}],
                                          statistics={"mutations": 5, "depth": 3})
            with tracker.tasker_scope("t0"), tracker.algorithm_scope("sac"):
                tracker.log_reward("t0", rng.uniform(0.5, 0.9))
            epoch_loss = loss
            tracker.log_delta_loss(epoch=1 if builder == "b0" else 2, loss=epoch_loss,
                                   prev_loss=previous_epoch_loss)
            previous_epoch_loss = epoch_loss
    tracker.log_modification_tree_stats({"accept_rate": 0.31, "depth": 4})
    tracker.log_modification_stats({"crossover": 12, "mutation": 33})
    checkpoint = Path(tracker.run_dir) / "checkpoint_final.bin"
    checkpoint.write_bytes(bytes(rng.getrandbits(8) for _ in range(4096)))
    tracker.log_checkpoint(str(checkpoint), step=steps)
    tracker.log_results(result_dict={"tasker_reward_avg": 0.71}, tasker_rewards={"t0": 0.8},
                        builder_rewards={"b0": 0.6}, action_outputs={"action": [0, 1, 0]}, step=steps)
    tracker.log_resource("tasker#0", cpu=12.3, gpu=4.1, mem=512.0)
    tracker.log_resource_cost(cpu_hours=0.2, gpu_hours=0.05, mem_gb=11.7, io_bytes=5_000_000, cost_eur=0.42)
    tracker.log_business_metrics(resource_cost_eur=0.42)
    tracker.log_comment("Builder b1 converged like b0; the data_loading phase is the slow one.")
    tracker.log_conclusion("Synthetic run: loss decays as expected.")
    tracker.finalize_experiment()
    return tracker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lezea_otel.cli.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--endpoint", default=None, help="OTLP endpoint, e.g. http://localhost:4318")
    parser.add_argument("--runs-dir", default=None, help="where runs/<id>/ is written (default ./runs)")
    parser.add_argument("--prometheus-port", type=int, default=None, help="serve /metrics while running")
    args = parser.parse_args(argv)
    tracker = run(args.steps, args.endpoint, args.runs_dir, args.prometheus_port)
    summary = tracker.get_experiment_summary()
    slowest = max(summary["phases"].items(), key=lambda item: item[1]["total_s"])
    print(f"run {tracker.experiment_id}: {summary['steps']['count']} steps, status {summary['status']}")
    print(f"  audit:  {tracker.audit_path}")
    print(f"  OTLP:   {Path(tracker.run_dir) / 'otlp'}/{{spans,metrics,logs}}.jsonl")
    print(f"  slowest phase: {slowest[0]} ({slowest[1]['total_s']:.2f} s over {slowest[1]['count']} calls)")
    for item in tracker.get_recommendations():
        print(f"  [{item['severity']}] {item['message']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
