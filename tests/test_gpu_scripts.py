"""The GPU scripts on a machine without a GPU: ``scripts/gpu_phase_check.py`` refuses in one line, its
verdicts hold on given numbers, its measurements run end to end against the CUDA-event double, and the
benchmark's GPU-timing case prints both figures.

The hardware run itself (the same script on a real GPU) is not a test: it needs the device.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_phase_check.py"
MIB = 1 << 20


@pytest.fixture(scope="module")
def check() -> ModuleType:
    """The script as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("gpu_phase_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_without_cuda_the_check_exits_2_with_one_line_and_no_traceback(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any device, so this holds on a GPU machine too
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no CUDA device: "), done.stderr
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


def test_agreement_allows_ten_percent_plus_50_microseconds(check):
    assert check.agreement("k", 0.0109, 0.010).verdict == "PASS"  # +9%
    assert check.agreement("k", 0.0089, 0.010).verdict == "FAIL"  # -11%
    assert check.agreement("k", 0.000150, 0.000100).verdict == "PASS"  # +50 µs: 10 µs + 50 µs allowed
    assert check.agreement("k", 0.000161, 0.000100).verdict == "FAIL"
    verdict = check.agreement("phase_gpu_time", 0.0105, 0.010)
    assert verdict.numbers["relative_difference"] == pytest.approx(0.05)
    assert "+5.00%" in verdict.summary


def test_wall_checks_say_whether_a_phase_launched_or_waited(check):
    gpu = [0.040, 0.041, 0.039]
    assert check.async_wall([0.0002, 0.0003, 0.0002], gpu).verdict == "PASS"
    assert check.async_wall([0.030, 0.031, 0.029], gpu).verdict == "FAIL"  # it synchronized somewhere
    assert check.sync_wall([0.0401, 0.0410, 0.0391], gpu).verdict == "PASS"
    assert check.sync_wall([0.0399, 0.0410, 0.0391], gpu).verdict == "PASS"  # 100 µs short: 1% + 50 µs
    short = check.sync_wall([0.0300, 0.0410, 0.0391], gpu)
    assert short.verdict == "FAIL" and short.numbers["short"] == 1
    assert check.sync_wall([], []).verdict == "FAIL"


def test_overhead_lag_and_memory_verdicts(check):
    assert check.overhead([12.0] * 10, [5.0] * 10, 25.0).verdict == "PASS"
    over = check.overhead([40.0] * 10, [5.0] * 10, 25.0)
    assert over.verdict == "FAIL" and over.numbers["added_us"] == pytest.approx(35.0)
    assert check.lag([], [], 0.005).verdict == "SKIP"
    assert check.lag([0.0001] * 9, [0.0002] * 9, 0.005).verdict == "PASS"
    assert check.lag([0.0001] * 9, [0.02] * 9, 0.005).verdict == "FAIL"
    context = 500 * MIB
    reserved = [2 * MIB, 1026 * MIB, 3074 * MIB]
    assert check.process_memory([r + context for r in reserved], reserved).verdict == "PASS"
    lost = check.process_memory([context, None, None], reserved)
    assert lost.verdict == "FAIL" and "another pid" in lost.summary
    wrong_growth = [context + 2 * MIB, context + 926 * MIB, context + 2974 * MIB]  # 100 MiB short
    assert check.process_memory(wrong_growth, reserved).verdict == "FAIL"
    assert check.process_memory([r - MIB for r in reserved], reserved).verdict == "FAIL"  # below torch's


def test_exit_code_and_results_file(check, tmp_path):
    passed, skipped = check.Check("a", "PASS", "fine"), check.Check("b", "SKIP", "not measurable")
    failed = check.Check("c", "FAIL", "off by 30%", {"tracker_s": 0.013})
    assert check.exit_code([passed, skipped]) == 0
    assert check.exit_code([passed, failed]) == 1
    assert check.exit_code([]) == 1  # nothing checked is no pass
    results = {"environment": {"gpu": "NVIDIA H200", "driver": "570.1"},
               "checks": [vars(c) for c in (passed, skipped, failed)]}
    path = check.write_results(tmp_path / "deep" / "out", results)
    assert json.loads(path.read_text())["checks"][2]["numbers"] == {"tracker_s": 0.013}
    text = path.with_suffix(".txt").read_text()
    assert "gpu NVIDIA H200, driver 570.1" in text and "FAIL  c: off by 30%" in text
    assert text.rstrip().endswith("GPU phase check FAILED: c")


def test_the_measurements_run_end_to_end_against_the_cuda_event_double(check, tmp_path):
    """The hardware run has one try: its measuring code runs here on the double (tests/fake_cuda.py)."""
    from .fake_cuda import installed

    with installed() as fake:
        gpu = check.Gpu(torch.cuda, lambda: torch.cuda.current_stream().synchronize(),
                        lambda: fake.launch(0.02))
        kernel = {c.name: c for c in check.check_kernel(gpu, tmp_path, 3)}
        costs = {c.name: c for c in check.check_overhead(gpu, tmp_path, 400, 2, 1e9)}
        lag = check.check_lag(gpu, tmp_path, 3, 1.0)
    for name in ("phase_gpu_time", "sync_phase_gpu_time", "summary_gpu_total", "span_attribute",
                 "async_wall"):
        assert kernel[name].verdict == "PASS", kernel[name].summary
    assert kernel["phase_gpu_time"].numbers["reference_s"] == pytest.approx(0.02, abs=0.005)
    synced = kernel["sync_wall"].numbers
    assert synced["wall_median_s"] >= 0.9 * synced["gpu_median_s"]  # the sync phase waited for its work
    assert costs["timing_off"].verdict == "PASS", costs["timing_off"].summary
    assert costs["phase_overhead"].numbers["calls"] == 400
    assert lag.verdict == "PASS" and lag.numbers["busy_p50_s"] >= 0


def test_the_benchmark_prints_a_phase_with_gpu_timing_on_and_off():
    benchmark = REPO / "scripts" / "benchmark.py"
    done = subprocess.run([sys.executable, str(benchmark), "--quick", "--only", "gpu"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "hardware numbers come from scripts/gpu_phase_check.py" in done.stdout
    rows = {name: float(mean) for name, mean in re.findall(r"^(phase, .+?\(CUDA-event double\))\s+([\d.]+)",
                                                           done.stdout, re.MULTILINE)}
    assert set(rows) == {"phase, GPU timing on (CUDA-event double)",
                         "phase, LEZEA_GPU_TIMING=off (CUDA-event double)"}
    assert all(mean > 0 for mean in rows.values())
    counted = re.search(r"phases with a GPU time: (\d+) of (\d+) on, (\d+) of (\d+) off", done.stdout)
    assert counted is not None, done.stdout
    assert counted[1] == counted[2] != "0" and counted[3] == "0" and counted[4] != "0"
