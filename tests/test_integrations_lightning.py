"""Lightning: ``LezeaLogger`` and ``LezeaCallback`` on a tiny real ``LightningModule`` trained for a few
epochs on the CPU; a failing fit; a 2-process DDP (gloo) fit launched by Lightning itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lezea_otel import semconv as names
from lezea_otel.integrations.lightning import LezeaCallback, LezeaLogger

from .frameworks import end_status, events, phase_names, training_values

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*GPU available but not used:UserWarning"),
    # Lightning 2.6 still builds torch's deprecated pytree LeafSpec (deprecated in torch 2.13)
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]
BATCHES, EPOCHS = 4, 3
BATCH = ["data", "forward", "backward", "optimizer"]


class Tiny(pl.LightningModule):
    """A linear regression; ``fail_at``: the global step whose ``training_step`` raises."""

    def __init__(self, lr: float = 0.05, fail_at: int = -1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if self.global_step == self.hparams.fail_at:
            raise RuntimeError("diverged")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader(count: int = BATCHES * 4) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def fit(tmp_path: Path, module: Tiny, *callbacks, logger=None) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=logger if logger else False,
                         callbacks=list(callbacks), default_root_dir=tmp_path, log_every_n_steps=1,
                         num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader(), loader(8))
    return trainer


def run_folder(tmp_path: Path) -> Path:
    (folder,) = [path for path in (tmp_path / "runs").iterdir() if path.is_dir()]
    return folder


class TestLightning:
    def test_logger_and_callback_record_the_fit(self, tmp_path):
        """Steps, validation values, hyperparameters, each checkpoint with its path and step, the phases of
        each batch, validation and saving as phases, and the run finished at the end of the fit."""
        checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
        logger = LezeaLogger("tiny", runs_dir=tmp_path / "runs")
        fit(tmp_path, Tiny(lr=0.05), LezeaCallback(), checkpoints, logger=logger)
        run = run_folder(tmp_path)
        assert run.name == logger.version

        steps = BATCHES * EPOCHS
        train = training_values(run)
        assert sorted(train) == list(range(steps))
        assert all("loss" in values for values in train.values())  # train_loss: "loss" in the train split
        assert sorted(training_values(run, "val")) == [BATCHES * epoch - 1 for epoch in range(1, EPOCHS + 1)]
        (config,) = events(run, "config")
        assert config["data"]["hyperparameters"] == {"lr": 0.05, "fail_at": -1}
        saved = [(Path(e["data"]["path"]).name, e["step"]) for e in events(run, "checkpoint")]
        assert saved == [(f"epoch={epoch}-step={BATCHES * (epoch + 1)}.ckpt", BATCHES * (epoch + 1))
                         for epoch in range(EPOCHS)]

        phases = phase_names(run)
        epoch = BATCH * BATCHES + ["validation", "checkpoint"]
        assert phases == epoch * EPOCHS
        lightning = [e for e in events(run, "phase") if e["data"]["name"] != "data"]
        assert {e["data"]["attributes"][names.PHASE_SOURCE] for e in lightning} == {names.SOURCE_LIGHTNING}
        saving = [e["data"]["attributes"][names.CHECKPOINT_PATH] for e in lightning
                  if e["data"]["name"] == "checkpoint"]
        assert [Path(path).name for path in saving] == [name for name, _ in saved]
        assert end_status(run) == "finished"

    def test_the_callback_alone_makes_and_ends_its_run(self, tmp_path):
        fit(tmp_path, Tiny(), LezeaCallback("alone", runs_dir=tmp_path / "runs"))
        run = run_folder(tmp_path)
        assert phase_names(run) == (BATCH * BATCHES + ["validation", "checkpoint"]) * EPOCHS
        assert training_values(run) == {}
        assert end_status(run) == "finished"

    def test_the_logger_alone_and_a_tracker_of_the_users_kept_open(self, capture):
        tracker = capture.tracker("mine", auto_start=True)
        trainer = fit(capture.runs_dir.parent, Tiny(), logger=LezeaLogger(tracker=tracker))
        assert trainer.checkpoint_callback is not None
        tracker.log_comment("after fit")  # the run is still open: the user ends it
        summary = tracker.finalize_experiment()
        assert summary["status"] == "finished" and summary["warnings"]["count"] == 0
        assert phase_names(tracker.audit_path) == []
        assert len(training_values(tracker.audit_path)) == BATCHES * EPOCHS
        assert [e["step"] for e in events(tracker.audit_path, "checkpoint")] == [4, 8, 12]  # one per save


FAILING = """
import sys
sys.path.insert(0, {tests!r})
from tests.test_integrations_lightning import Tiny, fit
from lezea_otel.integrations.lightning import LezeaCallback, LezeaLogger
from pathlib import Path
fit(Path.cwd(), Tiny(fail_at=5), LezeaCallback(), logger=LezeaLogger("failing"))
"""


def test_a_fit_that_raises_ends_the_run_failed_with_its_exception(tmp_path):
    """Lightning calls ``finalize("failed")`` and re-raises: the run ends failed, with that exception, and
    the phase the exception left is recorded with it."""
    done = subprocess.run([sys.executable, "-c", FAILING.format(tests=str(Path(__file__).parent.parent))],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LEZEA_RAISE_INTERNAL": "0"})
    assert done.returncode == 1 and "RuntimeError: diverged" in done.stderr
    run = run_folder(tmp_path)
    (end,) = events(run, "experiment_end")
    assert end["data"]["status"] == "failed" and "diverged" in end["data"]["error"]
    phases = events(run, "phase")
    assert [p["data"]["name"] for p in phases][-2:] == ["data", "forward"]
    assert "diverged" in phases[-1]["data"]["error"]
    assert sorted(training_values(run)) == list(range(5))


@pytest.mark.parametrize("with_callback", [True, False], ids=["logger+callback", "logger"])
def test_a_failed_fit_whose_exception_is_caught_still_ends_its_run_failed(tmp_path, monkeypatch,
                                                                           with_callback):
    """Notebook code that catches the fit's exception and goes on: the logger's ``finalize("failed")`` has
    ended the run failed already, with the exception itself when the callback saw it (else one naming
    Lightning), not left open to end ``abandoned`` later."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEZEA_RAISE_INTERNAL", "0")  # Lightning's own exception path, as a user runs it
    logger = LezeaLogger("caught")
    callbacks = [LezeaCallback()] if with_callback else []
    with pytest.raises(RuntimeError, match="diverged"):
        fit(tmp_path, Tiny(fail_at=5), *callbacks, logger=logger)
    (end,) = events(run_folder(tmp_path), "experiment_end")
    assert end["data"]["status"] == "failed" and end["data"]["ended_by"] == names.SOURCE_LIGHTNING
    expected = "diverged" if with_callback else "lightning reported the training failed"
    assert expected in end["data"]["error"], end["data"]


DDP = """
import sys
sys.path.insert(0, {tests!r})
import lightning.pytorch as pl
from tests.test_integrations_lightning import Tiny, loader
from lezea_otel.integrations.lightning import LezeaCallback, LezeaLogger
trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=LezeaLogger("ddp"),
                     callbacks=[LezeaCallback()], log_every_n_steps=1, num_sanity_val_steps=0,
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
trainer.fit(Tiny(), loader(), loader(8))
"""


def test_ddp_with_two_processes_is_one_experiment_and_one_trace(tmp_path):
    """Lightning launches the second rank itself (strategy="ddp", gloo): both ranks record into one
    experiment folder, a rank folder each, in one trace; the values come from rank 0, phases from both."""
    script = tmp_path / "train_ddp.py"
    script.write_text(DDP.format(tests=str(Path(__file__).parent.parent)))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LEZEA_", "OTEL_"))}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=240, env={**env, "LEZEA_QUIET": "1", "LEZEA_OBSERVERS": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    run = run_folder(tmp_path)
    assert sorted(path.name for path in run.iterdir() if path.is_dir() and path.name.startswith("rank")) == [
        "rank-0", "rank-1"]
    records = events(run)
    assert len({record["trace_id"] for record in records}) == 1
    starts = [r["data"] for r in records if r["kind"] == "experiment_start"]
    assert {start["experiment_id"] for start in starts} == {run.name}
    per_rank = {rank: phase_names(run / f"rank-{rank}") for rank in (0, 1)}
    for phases in per_rank.values():  # 8 batches of 4 over 2 ranks: 2 per rank and epoch
        assert phases == (BATCH * 2 + ["validation"]) * 2
    assert len(training_values(run / "rank-0")) == 4 and training_values(run / "rank-1") == {}
    assert [end_status(run / f"rank-{rank}") for rank in (0, 1)] == ["finished", "finished"]
