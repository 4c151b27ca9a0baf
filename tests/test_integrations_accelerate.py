"""Accelerate: ``LezeaTracker`` in a real ``Accelerator`` (CPU): the config and values recorded, the run
ended by ``end_training``; the Accelerate loop's phases through ``tracker.watch``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from lezea_otel.integrations.accelerate import LezeaTracker

from .frameworks import end_status, events, phase_names, training_values


def test_config_values_and_phases_of_an_accelerate_loop(tmp_path):
    accelerator = Accelerator(cpu=True, log_with=[LezeaTracker("acc", runs_dir=tmp_path / "runs")])
    accelerator.init_trackers("project", config={"lr": 0.1, "batch_size": 4})
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 4)
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4))
    tracker = accelerator.get_tracker("lezea", unwrap=True)
    tracker.watch(model, optimizer)
    for step, (inputs, targets) in enumerate(loader, 1):
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"loss": loss.item()}, step=step)
    accelerator.log({"val_loss": 0.5}, step=4)
    tracker.unwatch()
    accelerator.end_training()

    run = tracker.run_dir
    (config,) = events(run, "config")
    assert config["data"]["hyperparameters"] == {"lr": 0.1, "batch_size": 4}
    assert sorted(training_values(run)) == [1, 2, 3, 4]
    assert training_values(run, "val") == {4: {"loss": 0.5}}  # val_loss: "loss" in the val split
    assert phase_names(run) == ["forward", "backward", "optimizer"] * 4
    assert end_status(run) == "finished"


def test_a_tracker_of_the_users_is_not_ended(capture):
    mine = capture.tracker("mine", auto_start=True)
    accelerator = Accelerator(cpu=True, log_with=[LezeaTracker(tracker=mine)])
    accelerator.init_trackers("project")
    accelerator.log({"loss": 1.0}, step=1)
    accelerator.end_training()
    mine.log_comment("still open")
    assert mine.finalize_experiment()["warnings"]["count"] == 0
    assert training_values(mine.audit_path) == {1: {"loss": 1.0}}


@pytest.mark.parametrize("module", ["lightning", "transformers", "accelerate"])
def test_a_missing_framework_is_one_error_naming_the_extra(module):
    """Imported without its framework (blocked in ``sys.modules``), an integration says what to install."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            f"try:\n    import lezea_otel.integrations.{module}\n"
            "except ImportError as error:\n    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"install it with: pip install 'lezea_otel[{module}]'" in done.stdout
    assert f"lezea_otel.integrations.{module} needs" in done.stdout
