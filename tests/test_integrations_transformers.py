"""Hugging Face Transformers: ``LezeaCallback`` in a real ``Trainer`` on a tiny GPT-2 built from a config in
the test (nothing downloaded), with an eval set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from lezea_otel import semconv as names
from lezea_otel.integrations.transformers import LezeaCallback

from .frameworks import HUB_OFFLINE, end_status, events, phase_names, training_values

STEPS_PER_EPOCH, EPOCHS = 3, 2


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for variable, value in HUB_OFFLINE.items():
        monkeypatch.setenv(variable, value)


def tokens(count: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 32, (count, 8), generator=generator)
    return [{"input_ids": row, "labels": row} for row in ids]


def train(tmp_path: Path, callback: LezeaCallback) -> Trainer:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=EPOCHS,
                             per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=1e-3,
                             eval_strategy="epoch", save_strategy="epoch", logging_steps=1, report_to=[],
                             use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=tokens(4 * STEPS_PER_EPOCH),
                      eval_dataset=tokens(4), callbacks=[callback])
    trainer.train()
    return trainer


def test_the_callback_records_the_training(tmp_path):
    """TrainingArguments as the config record, each logged step's values, the eval values in ``val``, a
    checkpoint per epoch with its folder and step, the phases of each step, evaluation and saving."""
    train(tmp_path, LezeaCallback("tiny-gpt2", runs_dir=tmp_path / "runs"))
    (run,) = (tmp_path / "runs").iterdir()

    (config,) = events(run, "config")
    hyperparameters = config["data"]["hyperparameters"]
    assert hyperparameters["learning_rate"] == 1e-3 and hyperparameters["num_train_epochs"] == EPOCHS
    steps = STEPS_PER_EPOCH * EPOCHS
    train_values = training_values(run)
    assert all("loss" in train_values[step] for step in range(1, steps + 1))
    (results,) = events(run, "results")  # the Trainer's closing figures
    assert results["step"] == steps and results["data"]["result_dict"]["train_loss"] > 0
    val = training_values(run, "val")
    assert sorted(val) == [STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)]
    assert all("loss" in values for values in val.values())
    saved = [(Path(e["data"]["path"]).name, e["step"]) for e in events(run, "checkpoint")]
    assert saved == [(f"checkpoint-{STEPS_PER_EPOCH * epoch}", STEPS_PER_EPOCH * epoch)
                     for epoch in range(1, EPOCHS + 1)]

    epoch = ["optimizer", "training_step"] * STEPS_PER_EPOCH + ["validation", "checkpoint"]
    assert phase_names(run) == epoch * EPOCHS
    phases = events(run, "phase")
    assert {p["data"]["attributes"][names.PHASE_SOURCE] for p in phases} == {names.SOURCE_TRANSFORMERS}
    steps_ids = {p["span_id"] for p in phases if p["data"]["name"] == "training_step"}
    assert all(p["parent_span_id"] in steps_ids for p in phases if p["data"]["name"] == "optimizer")
    assert end_status(run) == "finished"


def test_a_tracker_of_the_users_stays_open(tmp_path, capture):
    tracker = capture.tracker("mine", auto_start=True)
    train(tmp_path, LezeaCallback(tracker=tracker))
    tracker.log_comment("after training")
    summary = tracker.finalize_experiment()
    assert summary["status"] == "finished" and summary["warnings"]["count"] == 0
    assert len(phase_names(tracker.audit_path)) == (2 * STEPS_PER_EPOCH + 2) * EPOCHS
