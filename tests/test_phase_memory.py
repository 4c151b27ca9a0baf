"""A phase's and a scope's peak memory: the real peak of that stretch (the kernel's RSS high-water mark,
read and reset by the exporter every 20 ms), not the observers' last sample. Run as a user runs it: the
exporter in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from lezea_otel import semconv as names
from lezea_otel.cli import main

MIB = 2**20
SPIKE = 300 * MIB

TRAINING = """
import json, resource, sys, time
import numpy as np
from lezea_otel import ExperimentTracker

def touch_and_free(size):
    block = np.ones(size // 8)  # every page written: resident
    del block

tracker = ExperimentTracker("spike", quiet=True)
tracker.start(prometheus_port=None)
with tracker.builder_scope("b1"):
    for step in range(1, 4):
        with tracker.span("calm"):
            np.ones(2**20 // 8).sum()
        time.sleep(0.2)  # the loop's other work: ten readings of the mark apart from the next phase
        with tracker.span("spike"):
            if step == 2:
                touch_and_free({spike})  # freed before the phase ends: no sample after it sees it
        time.sleep(0.2)
        tracker.log_training_step(step, {{"loss": 1.0}})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = tracker.finalize_experiment()
print(json.dumps({{"run_dir": str(tracker.run_dir), "phases": summary["phases"], "scopes": summary["scopes"],
                  "ru_maxrss": before * 1024}}))
"""


def _train(tmp_path: Path, **environment: str) -> dict:
    result = subprocess.run([sys.executable, "-c", TRAINING.format(spike=SPIKE)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "LEZEA_RUNS_DIR": str(tmp_path / "runs"),
                                 "LEZEA_RAISE_INTERNAL": "1", **environment})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _spans(run_dir: Path, name: str) -> list[dict]:
    found = []
    for line in (run_dir / names.OTLP_DIR / "spans.jsonl").read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                found += [{a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
                          for span in scope["spans"] if span["name"] == name]
    return found


def test_a_memory_spike_inside_one_phase_is_its_peak_and_no_other_phases(tmp_path):
    run = _train(tmp_path)
    spike, calm = run["phases"]["spike"], run["phases"]["calm"]
    assert spike["memory.peak"] >= SPIKE and spike["memory.method"] in ("high-water", "mixed")
    assert calm["memory.peak"] < spike["memory.peak"] - SPIKE // 2
    assert run["scopes"]["builder:b1"]["memory.peak"] >= spike["memory.peak"]  # the scope around it

    spans = _spans(Path(run["run_dir"]), "spike")
    peaks = sorted(float(span[names.SCOPE_MEMORY_PEAK]) for span in spans)
    assert len(peaks) == 3 and peaks[-1] >= SPIKE and peaks[1] < peaks[-1] - SPIKE // 2  # step 2's only
    measured = max(spans, key=lambda span: float(span[names.SCOPE_MEMORY_PEAK]))
    assert measured[names.SCOPE_MEMORY_METHOD] == "high-water"
    # the others too, but for a stretch the exporter could not read: before it began watching (a moment
    # after the trainer started), or after the trainer was gone (a loaded machine): the samples, so marked
    assert {span[names.SCOPE_MEMORY_METHOD] for span in spans} <= {"high-water", "sampled"}

    shown = CliRunner().invoke(main, ["show", run["run_dir"]])
    line = next(text for text in shown.output.splitlines() if "phase spike" in text)
    assert int(line.split("peak RSS ")[1].split(" MiB")[0]) >= SPIKE // MIB


def test_with_phase_memory_off_the_peaks_are_the_samples_and_the_process_mark_is_left_alone(tmp_path):
    run = _train(tmp_path, LEZEA_PHASE_MEMORY="false")
    assert run["phases"]["spike"].get("memory.method") == "sampled"
    spans = _spans(Path(run["run_dir"]), "spike")
    assert {span[names.SCOPE_MEMORY_METHOD] for span in spans} == {"sampled"}
    assert run["ru_maxrss"] >= SPIKE  # never reset


def test_readings_are_the_peaks_of_their_intervals_and_a_stretch_takes_those_it_overlaps():
    """The watermark of this very process: a spike between two readings is that interval's reading; a
    stretch before the first reading has none (the samples answer for it)."""
    import os
    import time as clock

    from lezea_otel.exporter.watermark import Watermark

    before = clock.time_ns()
    watermark = Watermark.open(os.getpid())
    assert watermark is not None
    try:
        watermark.read()
        quiet_start = clock.time_ns()
        watermark.read()
        quiet_end = clock.time_ns()
        block = np.ones(SPIKE // 8)
        del block
        spike_end = clock.time_ns()
        watermark.covering(spike_end)
        spike, quiet = watermark.peak(quiet_end, spike_end), watermark.peak(quiet_start, quiet_start)
        assert spike is not None and quiet is not None
        assert spike >= SPIKE and spike - quiet >= SPIKE // 2  # the quiet interval's is the process's RSS
        assert watermark.peak(before - 10**9, before - 1) is None
        assert watermark.run_peak >= spike
    finally:
        watermark.close()
