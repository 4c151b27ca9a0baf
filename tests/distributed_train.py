"""A real data-parallel training for the distributed tests, started by ``torchrun`` (gloo, CPU).

Each rank trains a tiny model on its own shard, averages its gradients with ``all_reduce`` every step,
and records scopes, phases and steps. ``STEPS`` sets the steps per rank; ``FAIL_RANK`` with
``FAIL_ATTEMPT`` makes every rank of that attempt record one step and stop before joining the process
group, that rank by raising (torchrun then restarts the worker group, with ``--max-restarts``). No rank
is left waiting for the failed one inside gloo, where a SIGTERM from torchrun cannot reach Python
until torchrun's SIGKILL 30 s later.
"""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist

from lezea_otel import ExperimentTracker


def main() -> None:
    tracker = ExperimentTracker("ddp", purpose="distributed test", tags=["gloo"])
    tracker.start()
    rank, attempt = int(os.environ["RANK"]), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if os.environ.get("FAIL_ATTEMPT") == str(attempt):
        tracker.log_training_step(1, {"loss": 9.0})
        if os.environ.get("FAIL_RANK") == str(rank):
            raise RuntimeError(f"rank {rank} fails on attempt {attempt}, as the test asked")
        tracker.finalize_experiment()
        return
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    torch.manual_seed(rank)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tracker.builder_scope("epoch-0"):
        for step in range(1, int(os.environ.get("STEPS", "5")) + 1):
            with tracker.span("data"):
                inputs, target = torch.randn(16, 8), torch.randn(16, 1)
            with tracker.span("forward"):
                loss = torch.nn.functional.mse_loss(model(inputs), target)
            with tracker.span("backward"):
                optimizer.zero_grad()
                loss.backward()
            with tracker.span("all_reduce"):
                for parameter in model.parameters():
                    assert parameter.grad is not None
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= world
            optimizer.step()
            tracker.log_training_step(step, {"loss": loss.item()})
    tracker.log_comment(f"rank {rank} of {world} done")
    summary = tracker.finalize_experiment() or {}
    figures = {"launch": summary["experiment"]["launch"], "steps": summary["steps"]["count"]}
    print("SUMMARY", json.dumps(figures), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
