"""The ``frameworks`` section of ``scripts/benchmark.py``: what each integration of issue 27 adds to one
training step, against the same training without it (``tracker.watch`` on a plain torch loop, Lightning's
``LezeaLogger`` + ``LezeaCallback``, the Transformers ``LezeaCallback``, Accelerate's ``LezeaTracker``).

Each case trains the same tiny model (torch CPU, the benchmark's intra-op threads) in blocks that
alternate with and without the integration; a block's time per step is taken inside the loop (between
its first and last step: the framework's start-up is not in it); the integrations record to one tracker
made before the blocks, its exporter settled (a run's start-up is no per-step cost); the figure is the
median over blocks of (with - without), so a machine that slows for a while slows both.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lezea_otel import ExperimentTracker

Block = Callable[[bool, int], float]
"""``block(with_integration, steps)`` -> seconds per step of that block."""


def alternate(block: Block, rounds: int, steps: int, settle: Callable[[], Any]) -> tuple[float, float, float]:
    """(µs per step without, with, and the median of the per-round differences); one warm-up round."""
    without, with_, added = [], [], []
    for r in range(rounds + 1):
        order = (False, True) if r % 2 else (True, False)
        timed = {}
        for on in order:
            settle()
            timed[on] = block(on, steps)
        if r:
            without.append(timed[False] * 1e6)
            with_.append(timed[True] * 1e6)
            added.append((timed[True] - timed[False]) * 1e6)
    return statistics.median(without), statistics.median(with_), statistics.median(added)


def watch_block(tracker: ExperimentTracker) -> Block:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, 64), torch.randn(32, 1)

    def block(on: bool, steps: int) -> float:
        if on:
            tracker.watch(model, optimizer)
        start = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        elapsed = time.perf_counter() - start
        if on:
            tracker.unwatch(model)
        return elapsed / steps

    return block


def lightning_block(tracker: ExperimentTracker) -> Block:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from lezea_otel.integrations.lightning import LezeaCallback, LezeaLogger

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(64, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
            if index == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, index: int) -> None:
            self.end = time.perf_counter()

    def block(on: bool, steps: int) -> float:
        clock = Clock()
        callbacks: list[Any] = [clock, LezeaCallback(tracker=tracker)] if on else [clock]
        logger = LezeaLogger(tracker=tracker) if on else False
        data = TensorDataset(torch.randn(32 * steps, 64), torch.randn(32 * steps, 1))
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                             log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.fit(Tiny(), DataLoader(data, batch_size=32))
        return (clock.end - clock.start) / (steps - 1)

    return block


def transformers_block(tracker: ExperimentTracker) -> Block:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from lezea_otel.integrations.transformers import LezeaCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    ids = torch.randint(0, 32, (4096, 8))
    rows = [{"input_ids": row, "labels": row} for row in ids]

    def block(on: bool, steps: int) -> float:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2))
        args = TrainingArguments(output_dir=str(tracker.run_dir / "hf"), max_steps=steps,
                                 per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                                 report_to=[], use_cpu=True, disable_tqdm=True)
        clock = Clock()
        callbacks: list[Any] = [clock, LezeaCallback(tracker=tracker)] if on else [clock]
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115 - the Trainer prints logs
            Trainer(model=model, args=args, train_dataset=rows, callbacks=callbacks).train()
        return (clock.end - clock.start) / (steps - 1)

    return block


def accelerate_block(tracker: ExperimentTracker) -> Block:
    import torch
    from accelerate import Accelerator

    from lezea_otel.integrations.accelerate import LezeaTracker

    x, y = torch.randn(32, 64), torch.randn(32, 1)

    def block(on: bool, steps: int) -> float:
        log_with = [LezeaTracker(tracker=tracker)] if on else None
        accelerator = Accelerator(cpu=True, log_with=log_with)
        accelerator.init_trackers("bench", config={"lr": 1e-3})
        model = torch.nn.Linear(64, 1)
        model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=1e-3))
        start = time.perf_counter()
        for step in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            accelerator.log({"loss": loss.item()}, step=step)
        elapsed = time.perf_counter() - start
        accelerator.end_training()
        return elapsed / steps

    return block


CASES: dict[str, tuple[Callable[[ExperimentTracker], Block], int]] = {
    "tracker.watch (forward, backward, optimizer phases)": (watch_block, 500),
    "Lightning LezeaLogger + LezeaCallback": (lightning_block, 200),
    "Transformers LezeaCallback": (transformers_block, 100),
    "Accelerate LezeaTracker (a value per step)": (accelerate_block, 500),
}
"""Case -> (its blocks, steps per block)."""


def frameworks(root: Path, rounds: int, quick: bool, report: Callable[[str], None],
               settle: Callable[[], Any]) -> None:
    """Each case's µs per step without and with its integration, and what the integration adds."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    warnings.filterwarnings("ignore")  # the frameworks' advice (few DataLoader workers, ...)
    report(f"{'case':52} {'without µs':>11} {'with µs':>9} {'added µs':>9}")
    for name, (make, steps) in CASES.items():
        tracker = ExperimentTracker(f"bench {name}", auto_start=True, runs_dir=root / "frameworks")
        try:
            block = make(tracker)
            without, with_, added = alternate(block, max(2, rounds) if not quick else 1,
                                              steps if not quick else max(20, steps // 10), settle)
        except ImportError as error:
            report(f"{name:52} not measured: {error}")
            continue
        finally:
            tracker.finalize_experiment()
        report(f"{name:52} {without:11.1f} {with_:9.1f} {added:+9.1f}")
