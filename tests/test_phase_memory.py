"""A phase's and a scope's peak memory: the real peak of that stretch (the kernel's RSS high-water mark,
reset at the block's enter), not the observers' last sample."""

from __future__ import annotations

import resource

import numpy as np
from click.testing import CliRunner

from lezea_otel import semconv as names
from lezea_otel.cli import main

MIB = 2**20
SPIKE = 300 * MIB


def _touch_and_free(size: int) -> None:
    block = np.ones(size // 8)  # every page written: resident
    del block


def test_a_memory_spike_inside_one_phase_is_its_peak_and_no_other_phases(capture):
    tracker = capture.tracker("spike", auto_start=True)
    with tracker.builder_scope("b1"):
        for step in range(1, 4):
            with tracker.span("calm"):
                np.ones(MIB // 8).sum()
            with tracker.span("spike"):
                if step == 2:
                    _touch_and_free(SPIKE)  # freed before the phase ends: no sample after it sees it
            tracker.log_training_step(step, {"loss": 1.0})
    summary = tracker.finalize_experiment()

    spike, calm = summary["phases"]["spike"], summary["phases"]["calm"]
    assert spike["memory.peak"] >= SPIKE
    assert calm["memory.peak"] < spike["memory.peak"] - SPIKE // 2
    assert summary["scopes"]["builder:b1"]["memory.peak"] >= spike["memory.peak"]  # the scope around it
    peaks = [span.attributes[names.SCOPE_MEMORY_PEAK] for span in capture.spans("spike")]
    assert max(peaks) >= SPIKE and sorted(peaks)[1] < max(peaks) - SPIKE // 2  # only step 2's instance
    assert {span.attributes[names.SCOPE_MEMORY_METHOD] for span in capture.spans("spike")} == {"high-water"}

    shown = CliRunner().invoke(main, ["show", str(tracker.run_dir)])
    line = next(text for text in shown.output.splitlines() if "spike" in text and "peak RSS" in text)
    assert int(line.split("peak RSS ")[1].split(" MiB")[0]) >= SPIKE // MIB


def test_with_phase_memory_off_the_process_peak_is_left_alone(capture, monkeypatch):
    monkeypatch.setenv("LEZEA_PHASE_MEMORY", "false")
    tracker = capture.tracker("untouched", auto_start=True)
    _touch_and_free(SPIKE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tracker.span("calm"):
        pass
    summary = tracker.finalize_experiment()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >= before  # never reset
    assert summary["phases"]["calm"].get("memory.method") != "high-water"
