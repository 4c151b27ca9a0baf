"""``tracker.iterate``: the wait for each item of a real torch ``DataLoader`` (with worker processes) as a
``data_wait`` phase, attributed to the step that was running; and the attribution of phases to steps."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lezea_otel import semconv as names
from lezea_otel.analysis.runs import load_run

DELAY_S = 0.03


class SlowDataset(Dataset):
    """Each item takes ``DELAY_S`` to make: with 2 workers the loop waits about half of it per batch."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int):
        time.sleep(DELAY_S)  # the slow input pipeline under test, in a worker process
        return torch.full((4,), float(index))


class Timed:
    """The loader's iterator with the time of each ``next()`` measured around it (the test's reference)."""

    def __init__(self, iterable) -> None:
        self._items = iter(iterable)
        self.waits: list[float] = []

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.waits.append(time.perf_counter() - start)


def test_iterate_times_each_wait_of_a_dataloader_with_workers_and_attributes_it_to_its_step(capture):
    loader = DataLoader(SlowDataset(), batch_size=2, num_workers=2)
    tracker = capture.tracker("data-wait", auto_start=True)
    reference = Timed(loader)
    steps = 0
    with tracker.builder_scope("b1"):
        for steps, batch in enumerate(tracker.iterate(reference), 1):
            with tracker.span("forward"):
                batch.sum().item()
            tracker.log_training_step(steps, {"loss": 1.0 / steps})
            with tracker.span("optimizer"):
                pass
    summary = tracker.finalize_experiment()

    assert steps == 12
    spans = capture.spans("data")
    assert len(spans) == 12  # one per batch; the exhausted call at the end is no phase
    assert all(span.attributes[names.PHASE_KIND] == names.DATA_WAIT for span in spans)
    measured = sum((span.end_time - span.start_time) / 1e9 for span in spans)
    reference_total = sum(reference.waits[:12])
    assert measured == pytest.approx(reference_total, rel=0.05, abs=0.005)
    assert measured > 12 * DELAY_S / 2 * 0.5  # the workers' sleeps are really waited for
    assert summary["phases"]["data"]["count"] == 12

    run = load_run(tracker.run_dir)
    by_name: dict[str, list[int | None]] = {}
    for item in run.timed:
        if item.kind == "phase":
            by_name.setdefault(item.name, []).append(item.step)
    # Each phase belongs to the step of its own batch: data and forward run before the step is logged,
    # the optimizer after it.
    expected = list(range(1, 13))
    assert by_name == {"data": expected, "forward": expected, "optimizer": expected}


def test_an_exception_of_the_iterable_is_raised_unchanged_and_recorded_on_its_phase(capture):
    def batches():
        yield 1
        raise KeyError("shard 7 is missing")

    tracker = capture.tracker("broken-loader", auto_start=True)
    seen = []
    with pytest.raises(KeyError, match="shard 7"):
        for item in tracker.iterate(batches(), phase="load"):
            seen.append(item)
    tracker.finalize_experiment()
    assert seen == [1]
    spans = capture.spans("load")
    assert len(spans) == 2 and spans[1].status.is_ok is False


def test_iterate_over_something_not_iterable_warns_once_and_yields_nothing(capture, lezea_warnings):
    tracker = capture.tracker("not-iterable", auto_start=True)
    assert list(tracker.iterate(42)) == []
    tracker.finalize_experiment()
    (warning,) = lezea_warnings()
    assert "iterate" in warning and "cannot be iterated" in warning


def test_phases_of_a_loop_that_logs_its_step_first_belong_to_that_step(capture):
    tracker = capture.tracker("logs-first", auto_start=True)
    for step in range(1, 4):
        tracker.log_training_step(step, {"loss": 1.0})
        tracker.log_training_step(step, {"loss": 2.0}, data_split="val")  # no step: never attributed
        with tracker.span("forward"):
            pass
        with tracker.span("backward"):
            pass
    tracker.finalize_experiment()
    steps = [(t.name, t.step) for t in load_run(tracker.run_dir).timed]
    assert steps == [("forward", 1), ("backward", 1), ("forward", 2), ("backward", 2), ("forward", 3),
                     ("backward", 3)]


def test_phases_of_a_loop_that_logs_every_few_steps_belong_to_the_next_logged_step(capture):
    tracker = capture.tracker("logs-every-2", auto_start=True)
    for step in range(1, 5):
        with tracker.span("forward"):
            pass
        if step % 2 == 0:
            tracker.log_training_step(step, {"loss": 1.0})
    tracker.finalize_experiment()
    assert [t.step for t in load_run(tracker.run_dir).timed] == [2, 2, 4, 4]


def test_a_loop_starved_by_its_data_loader_is_told_so_with_its_numbers(capture):
    loader = DataLoader(SlowDataset(), batch_size=2, num_workers=0)  # no workers: every item waited for
    tracker = capture.tracker("starved", auto_start=True)
    for step, batch in enumerate(tracker.iterate(loader), 1):
        with tracker.span("forward"):
            batch.sum().item()
        tracker.log_training_step(step, {"loss": 1.0 / step})
    summary = tracker.finalize_experiment()
    (advice,) = [item for item in tracker.get_recommendations() if item["rule"] == "data_wait"]
    waited = summary["phases"]["data"]["total_s"]
    assert advice["evidence"]["wait_s"] == pytest.approx(waited)
    assert advice["evidence"]["batches"] == 12 and advice["evidence"]["share"] > 0.5
    assert f"{waited:.1f} s for its data" in advice["message"] and "DataLoader workers" in advice["message"]
