"""GPU time of phases on a (doubled) GPU: CUDA events at enter and exit, resolved off the training thread.

The double (``tests/fake_cuda.py``) is installed onto the real torch module at the ``torch.cuda`` boundary
only; everything else (the tracker, the exporter thread, the SDK) is real.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading

import pytest
import torch  # tests/fake_cuda.py doubles its CUDA side (there is no GPU)

from lezea_otel import semconv as names
from lezea_otel.testing import Capture

from .fake_cuda import installed

GPU = names.PHASE_GPU_DURATION


def _phase_attributes(capture, name):
    return [dict(span.attributes or {}) for span in capture.spans(name)]


def _in_thread(work, timeout_s: float = 30.0) -> None:
    """Run ``work`` on a thread and fail (instead of hanging) when it has not returned in ``timeout_s``."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(error)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout_s), f"{work.__name__} did not return within {timeout_s} s: it blocked"
    if errors:
        raise errors[0]


def test_a_phase_gets_the_gpu_time_of_its_kernels_not_of_their_launch(capture):
    with installed() as gpu:
        tracker = capture.tracker("gpu", auto_start=True)
        with tracker.span("forward"):
            gpu.launch(0.25)  # returns at once, as a kernel launch does
        with tracker.span("optimizer"):
            pass
        summary = tracker.finalize_experiment()
    (forward,) = capture.spans("forward")
    wall = (forward.end_time - forward.start_time) / 1e9
    assert forward.attributes[GPU] == pytest.approx(0.25, abs=0.05)
    assert wall < 0.1  # the CPU only launched it
    (optimizer,) = capture.spans("optimizer")
    assert optimizer.attributes[GPU] < 0.05  # the kernel's time is not pushed into the next phase
    histogram = capture.points(GPU, lezea__phase__name="forward")
    assert histogram[0].value["count"] == 1 and histogram[0].value["sum"] == pytest.approx(0.25, abs=0.05)
    assert summary["phases"]["forward"]["gpu_total_s"] == pytest.approx(0.25, abs=0.05)
    assert summary["phases"]["forward"]["total_s"] < 0.1


def test_the_span_ends_only_once_its_exit_event_completes_and_the_caller_never_waits(capture):
    with installed() as gpu:
        tracker = capture.tracker("held", auto_start=True)
        gpu.hold()  # the GPU makes no progress: a resolver waiting for it waits as long as this lasts

        def train() -> None:
            for step in range(1, 51):
                with tracker.span("forward"):
                    gpu.launch(0.001)
                tracker.log_training_step(step, {"loss": 1.0 / step})

        _in_thread(train)  # 50 phases with none of their GPU work done: the loop ran through
        assert capture.spans("forward") == []  # no phase ends before its GPU work has
        assert len(capture.points("lezea.training.loss")) == 1  # the steps went on meanwhile
        gpu.release()
        summary = tracker.finalize_experiment()
    spans = capture.spans("forward")
    assert len(spans) == 50 and all(s.attributes[GPU] >= 0.0009 for s in spans)
    assert summary["phases"]["forward"]["count"] == 50


def test_a_finalize_ends_phases_whose_gpu_work_never_completes_within_the_shutdown_bound(capture,
                                                                                        monkeypatch):
    monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "0.3")
    with installed() as gpu:
        tracker = capture.tracker("stuck", auto_start=True)
        gpu.hold()  # a hung kernel
        for _ in range(3):
            with tracker.span("forward"):
                gpu.launch(0.01)
        summaries = []
        _in_thread(lambda: summaries.append(tracker.finalize_experiment()), timeout_s=10)
        gpu.release()
    spans = capture.spans("forward")
    assert len(spans) == 3
    assert all(s.attributes[names.GPU_UNRESOLVED] is True and GPU not in s.attributes for s in spans)
    assert summaries[0]["phases"]["forward"]["gpu_unresolved"] == 3


def test_sync_phases_wait_for_their_gpu_work_and_so_carry_its_wall_time(capture, monkeypatch, tmp_path):
    with installed() as gpu:
        tracker = capture.tracker("sync", auto_start=True)
        with tracker.span("forward", sync=True, micro_batch=2):
            gpu.launch(0.2)
        with tracker.span("backward"):
            gpu.launch(0.2)
        tracker.finalize_experiment()
        assert gpu.synchronizations == 1
    (forward,), (backward,) = capture.spans("forward"), capture.spans("backward")
    assert (forward.end_time - forward.start_time) / 1e9 >= 0.19
    assert forward.attributes["micro_batch"] == 2 and "sync" not in forward.attributes
    assert (backward.end_time - backward.start_time) / 1e9 < 0.1

    monkeypatch.setenv("LEZEA_GPU_SYNC", "true")  # every phase
    capture = Capture(tmp_path / "again")  # a finalized tracker's exporters are shut down
    with installed() as gpu:
        tracker = capture.tracker("sync-all", auto_start=True)
        with tracker.span("step"):
            gpu.launch(0.05)
        tracker.finalize_experiment()
        assert gpu.synchronizations == 1


def test_scopes_are_timed_on_the_gpu_by_a_setting_and_nothing_is_with_timing_off(capture, monkeypatch,
                                                                                  tmp_path):
    monkeypatch.setenv("LEZEA_GPU_TIMING", "scopes")
    with installed() as gpu:
        tracker = capture.tracker("scopes", auto_start=True)
        with tracker.builder_scope("b1"), tracker.span("forward"):
            gpu.launch(0.1)
        tracker.finalize_experiment()
    (scope,) = capture.spans("builder")
    assert scope.attributes[names.SCOPE_GPU_DURATION] == pytest.approx(0.1, abs=0.05)

    monkeypatch.setenv("LEZEA_GPU_TIMING", "off")
    capture = Capture(tmp_path / "again")
    with installed() as gpu:
        tracker = capture.tracker("off", auto_start=True)
        with tracker.builder_scope("b2"), tracker.span("forward2"):
            gpu.launch(0.01)
        tracker.finalize_experiment()
        assert gpu.events_recorded == 0
    assert GPU not in capture.spans("forward2")[0].attributes


def test_before_cuda_is_initialised_phases_are_as_on_a_cpu(capture):
    with installed(initialized=False) as gpu:
        tracker = capture.tracker("cpu", auto_start=True)
        with tracker.span("forward"):
            pass
        summary = tracker.finalize_experiment()
        assert gpu.events_recorded == 0
    attributes = capture.spans("forward")[0].attributes
    assert GPU not in attributes and names.GPU_UNRESOLVED not in attributes
    assert "gpu_total_s" not in summary["phases"]["forward"]


def test_a_failing_cuda_event_costs_the_gpu_time_only_with_one_warning(capture, lezea_warnings, monkeypatch):
    monkeypatch.setenv("LEZEA_RAISE_INTERNAL", "0")
    with installed() as gpu:
        def broken(self, stream=None):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        monkeypatch.setattr(torch.cuda.Event, "record", broken)
        tracker = capture.tracker("broken", auto_start=True)
        for _ in range(3):
            with tracker.span("forward"):
                gpu.launch(0.001)
        summary = tracker.finalize_experiment()
    assert summary["phases"]["forward"]["count"] == 3
    assert len(capture.spans("forward")) == 3
    warned = [m for m in lezea_warnings() if "CUDA events failed" in m]
    assert len(warned) == 1 and "illegal memory access" in warned[0] and "span" in warned[0]


def test_nvtx_ranges_carry_the_span_names_when_turned_on(capture, monkeypatch, tmp_path):
    with installed() as gpu:
        tracker = capture.tracker("nvtx-off", auto_start=True)
        with tracker.span("forward"):
            pass
        tracker.finalize_experiment()
        assert gpu.nvtx == []
    monkeypatch.setenv("LEZEA_NVTX", "1")
    capture = Capture(tmp_path / "again")
    with installed() as gpu:
        tracker = capture.tracker("nvtx", auto_start=True)
        with tracker.builder_scope("b1"):
            with tracker.span("forward"):
                pass
            for _ in tracker.iterate([1]):
                pass
        tracker.finalize_experiment()
        assert gpu.nvtx == [("push", "builder"), ("push", "forward"), ("pop", ""), ("push", "data"),
                            ("pop", ""), ("push", "data"), ("pop", ""), ("pop", "")]
    span_names = {span.name for span in capture.spans()}
    assert {"builder", "forward", "data"} <= span_names


class _CpuBuildNvtx:
    """What ``torch.cuda.nvtx`` calls on a CPU build of torch (its ``_NVTXStub``): PyPI's torch for Linux
    is a CUDA build, whose NVTX works without a GPU, so the CPU build's behaviour is put in its place."""

    @staticmethod
    def _fail(*_args: object) -> None:
        raise RuntimeError("NVTX functions not installed. Are you sure you have a CUDA build?")

    rangePushA = rangePop = markA = _fail  # noqa: N815 - torch's names


def test_nvtx_on_a_cpu_build_of_torch_is_one_info_line_and_no_warning(capture, monkeypatch, caplog,
                                                                      lezea_warnings):
    monkeypatch.setattr(torch.cuda.nvtx, "_nvtx", _CpuBuildNvtx())
    monkeypatch.setenv("LEZEA_NVTX", "1")
    caplog.set_level(logging.INFO, logger="lezea_otel")
    tracker = capture.tracker("cpu-nvtx", auto_start=True)
    for _ in range(3):
        with tracker.span("forward"):
            pass
    summary = tracker.finalize_experiment()
    infos = [r.getMessage() for r in caplog.records if r.name == "lezea_otel" and r.levelno == logging.INFO]
    assert len([m for m in infos if "NVTX" in m]) == 1
    assert lezea_warnings() == [] and summary["phases"]["forward"]["count"] == 3


_NO_TORCH_RUN = """
import logging, sys
{block}
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("no-torch", quiet=True)
tracker.start(prometheus_port=None)
with tracker.builder_scope("b"):
    for step, item in enumerate(tracker.iterate(range(3)), 1):
        with tracker.span("forward", sync=True):
            pass
        tracker.log_training_step(step, {{"loss": 1.0}})
summary = tracker.finalize_experiment()
assert summary["phases"]["forward"]["count"] == 3 and summary["phases"]["data"]["count"] == 3, summary
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize("torch_installed", [True, False])
def test_without_torch_imported_or_installed_nothing_is_imported_and_one_info_line_is_all(
        tmp_path, torch_installed):
    # Without torch installed: an import of it fails as in a venv that lacks it (a path entry first in
    # sys.path whose "torch" package raises ModuleNotFoundError, as the import system does).
    block = "" if torch_installed else textwrap.dedent("""
        import importlib.abc
        class _NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, _NoTorch())
    """)
    result = subprocess.run([sys.executable, "-c", _NO_TORCH_RUN.format(block=block)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "LEZEA_NVTX": "1", "LEZEA_GPU_TIMING": "scopes",
                                 "LEZEA_RUNS_DIR": str(tmp_path / "runs"), "LEZEA_RAISE_INTERNAL": "1"})
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith(("INFO", "WARNING", "ERROR"))]
    assert [line for line in lines if "NVTX" in line] == [
        "INFO LEZEA_NVTX is on but torch is not imported; no NVTX ranges are emitted"]
    assert not [line for line in lines if line.startswith(("WARNING", "ERROR"))]


def test_slow_and_show_put_the_gpu_time_beside_the_wall_time_and_rank_by_it(capture):
    from click.testing import CliRunner

    from lezea_otel.cli import main

    with installed() as gpu:
        tracker = capture.tracker("cli", auto_start=True)
        for step in range(1, 4):
            with tracker.span("forward"):
                gpu.launch(0.05)  # asynchronous: no wall time
            with tracker.span("loss_item", sync=True):  # .item(): waits for forward's kernels
                gpu.launch(0.001)
            tracker.log_training_step(step, {"loss": 1.0 / step})
        tracker.finalize_experiment()
    slow = CliRunner().invoke(main, ["slow", str(tracker.run_dir)]).output
    assert "ranked by GPU time" in slow
    rows = [line.split("│")[1].strip() for line in slow.splitlines() if line.startswith("│ ")]
    assert rows[:2] == ["forward", "loss_item"]  # by GPU total, though forward's wall time is about 0
    shown = CliRunner().invoke(main, ["show", str(tracker.run_dir)]).output
    forward = next(line for line in shown.splitlines() if "phase forward" in line)
    assert "GPU total 0.15" in forward


_ALLOCATOR_RUN = """
import sys
sys.path.insert(0, {root!r})
from tests.fake_cuda import installed
from lezea_otel import ExperimentTracker
with installed() as gpu:
    tracker = ExperimentTracker("allocator", quiet=True)
    tracker.start(prometheus_port=None)
    gpu.allocate(3 * 2**30)
    gpu.free(2**30)
    for step in range(1, 4):
        tracker.log_training_step(step, {{"loss": 1.0 / step}})
    tracker.finalize_experiment()
print(tracker.run_dir)
"""


def test_the_cuda_allocator_reaches_the_exporter_process_as_gauges(tmp_path):
    """Only the training process can read torch's allocator: it records it at a training step (once per
    observe interval), and the exporter process, which never imports torch, exports the gauges."""
    import json
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-c", _ALLOCATOR_RUN.format(root=root)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "LEZEA_RUNS_DIR": str(tmp_path / "runs"),
                                 "LEZEA_RAISE_INTERNAL": "1"})
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    events = [json.loads(line) for line in (run_dir / names.AUDIT_FILE).read_text().splitlines()]
    assert [e["kind"] for e in events].count("torch_memory") == 1  # once per interval, not per step
    latest: dict[str, float] = {}
    for line in (run_dir / names.OTLP_DIR / "metrics.jsonl").read_text().splitlines():
        for resource in json.loads(line)["resourceMetrics"]:
            for scope in resource["scopeMetrics"]:
                for metric in scope["metrics"]:
                    if metric["name"].startswith("lezea.torch.cuda.memory."):
                        (point,) = metric["gauge"]["dataPoints"]
                        latest[metric["name"]] = float(point.get("asInt", point.get("asDouble")))
    assert latest == {names.TORCH_ALLOCATED: 2 * 2**30, names.TORCH_RESERVED: 3 * 2**30,
                      names.TORCH_PEAK: 3 * 2**30}
