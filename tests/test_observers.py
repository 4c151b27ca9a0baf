"""Observers: GPUs through a pynvml double with NVML's real behaviour, the process tree with real
processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pynvml
import pytest

from .fake_nvml import FakeGpu, build
from .test_observers_process import CHILD

GPU0 = "GPU-11111111-2222-3333-4444-555555555555"
GPU1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def gpus(monkeypatch):
    devices = [FakeGpu(GPU0, processes=[(os.getpid(), 3 * 2**30), (999_999, 2**30)]),
               FakeGpu(GPU1, name="NVIDIA A100-SXM4-40GB", utilization=5)]
    module = build(devices)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return devices


def started(capture, **kwargs):
    tracker = capture.tracker("observed", **kwargs)
    tracker.start(prometheus_port=None)
    return tracker


def burn(cpu_s):
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass


def by_gpu(capture, name):
    return {(p.attributes["hw.parent"] if p.attributes.get("hw.type") == "temperature"
             else p.attributes["hw.id"]): p
            for p in capture.points(name)}


class TestGpuMetrics:
    def test_values_units_and_identity(self, capture, gpus):
        """Each NVML reading is exported under its semantic-convention name, in OTel units, per UUID."""
        tracker = started(capture)
        util = by_gpu(capture, "hw.gpu.utilization")
        assert util[GPU0].value == 0.5 and util[GPU0].unit == "1" and util[GPU1].value == 0.05
        assert util[GPU0].attributes["hw.name"] == "NVIDIA H100 80GB HBM3"
        assert util[GPU0].attributes["hw.vendor"] == "nvidia"
        assert util[GPU0].attributes["lezea.gpu.index"] == 0
        assert util[GPU0].attributes["lezea.gpu.driver_version"] == "550.54.15"
        assert util[GPU0].attributes["lezea.experiment.id"] == tracker.experiment_id
        memory = by_gpu(capture, "hw.gpu.memory.usage")[GPU0]
        assert memory.value == 10 * 2**30 and memory.unit == "By"
        assert by_gpu(capture, "hw.gpu.memory.limit")[GPU0].value == 80 * 2**30
        assert by_gpu(capture, "hw.gpu.memory.utilization")[GPU0].value == 0.125
        power = by_gpu(capture, "hw.power")[GPU0]
        assert power.value == 300.0 and power.unit == "W" and power.attributes["hw.type"] == "gpu"
        energy = by_gpu(capture, "hw.energy")[GPU0]
        assert energy.value == 1000.0 and energy.unit == "J" and energy.kind == "Sum"
        temperature = by_gpu(capture, "hw.temperature")[GPU0]
        assert temperature.value == 60 and temperature.unit == "Cel"
        assert by_gpu(capture, "lezea.gpu.clock.graphics")[GPU0].value == 1980
        assert by_gpu(capture, "lezea.gpu.power.limit")[GPU0].value == 700.0
        errors = {(p.attributes["hw.id"], p.attributes["error.type"]): p.value
                  for p in capture.points("hw.errors")}
        assert errors[(GPU0, "corrected")] == 3 and errors[(GPU0, "uncorrected")] == 0
        (own,) = capture.points("lezea.process.gpu.memory.usage")  # pid 999999 is not in this run's tree
        assert own.value == 3 * 2**30 and own.attributes["process.pid"] == os.getpid()
        tracker.finalize_experiment()

    @pytest.mark.parametrize(("visible", "expected"), [
        ("1", {GPU1}), ("0,1", {GPU0, GPU1}), (GPU1, {GPU1}), ("GPU-aaaaaaaa", {GPU1}), ("", set()),
        ("0,7,1", {GPU0}),
    ])
    def test_cuda_visible_devices(self, capture, gpus, monkeypatch, visible, expected):
        """Only the job's GPUs: indexes, full or short UUIDs, stopping at the first unknown entry like
        CUDA."""
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        tracker = started(capture)
        assert set(by_gpu(capture, "hw.gpu.utilization")) == expected
        tracker.finalize_experiment()

    def test_all_and_uuid_settings(self, capture, gpus, monkeypatch):
        """LEZEA_GPUS=all ignores CUDA_VISIBLE_DEVICES; a UUID list picks exactly those."""
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
        monkeypatch.setenv("LEZEA_GPUS", "all")
        tracker = started(capture)
        assert set(by_gpu(capture, "hw.gpu.utilization")) == {GPU0, GPU1}
        tracker.finalize_experiment()

    def test_mig_devices(self, capture, monkeypatch):
        """A MIG instance named in CUDA_VISIBLE_DEVICES is observed under its own UUID."""
        mig = FakeGpu("MIG-9999aaaa-0000-1111-2222-333333333333", name="NVIDIA H100 MIG 1g.10gb")
        monkeypatch.setitem(sys.modules, "pynvml", build([FakeGpu(GPU0, mig=[mig])]))
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig.uuid)
        tracker = started(capture)
        (point,) = capture.points("hw.gpu.utilization")
        assert point.attributes["hw.id"] == mig.uuid and point.attributes["hw.parent"] == GPU0
        tracker.finalize_experiment()


class TestGpuErrors:
    def test_unsupported_field_is_absent(self, capture, gpus, lezea_warnings):
        """NVML_ERROR_NOT_SUPPORTED for power: hw.power is absent for that GPU, one warning, the rest
        stays."""
        gpus[1].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_NOT_SUPPORTED
        tracker = started(capture)
        capture.sample_observers()
        capture.sample_observers()
        assert set(by_gpu(capture, "hw.power")) == {GPU0}
        assert set(by_gpu(capture, "hw.gpu.utilization")) == {GPU0, GPU1}
        (message,) = [m for m in lezea_warnings() if "power" in m]
        assert "NVMLError_NotSupported" in message and GPU1 in message
        tracker.finalize_experiment()

    def test_lost_gpu_is_dropped(self, capture, gpus, lezea_warnings):
        """A GPU that falls off the bus mid-run is dropped with one warning; the other continues."""
        tracker = started(capture)
        gpus[0].errors["nvmlDeviceGetUtilizationRates"] = pynvml.NVML_ERROR_GPU_IS_LOST
        capture.sample_observers()
        capture.sample_observers()
        assert set(by_gpu(capture, "hw.gpu.utilization")) == {GPU1}
        assert len([m for m in lezea_warnings() if "is lost" in m]) == 1
        summary = tracker.finalize_experiment()
        assert summary["steps"]["count"] == 0 and summary["status"] == "finished"

    def test_no_permission_and_unknown_process_memory(self, capture, gpus, lezea_warnings):
        """No permission for the process list, or usedGpuMemory None: that value is absent, one warning
        each."""
        gpus[0].processes = [(os.getpid(), None)]
        gpus[1].errors["nvmlDeviceGetComputeRunningProcesses"] = pynvml.NVML_ERROR_NO_PERMISSION
        tracker = started(capture)
        capture.sample_observers()
        assert capture.points("lezea.process.gpu.memory.usage") == []
        assert by_gpu(capture, "hw.gpu.memory.usage")[GPU0].value == 10 * 2**30
        messages = lezea_warnings()
        assert len([m for m in messages if "usedGpuMemory is None" in m]) == 1
        assert len([m for m in messages if "NVMLError_NoPermission" in m]) == 1
        tracker.finalize_experiment()

    @pytest.mark.parametrize("code",
                             [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
    def test_no_driver_means_no_gpu_instruments(self, capture, monkeypatch, lezea_warnings, caplog, code):
        """No driver or library: GPU instruments are absent with one info line; process metrics remain."""
        caplog.set_level("INFO", logger="lezea_otel")
        monkeypatch.setitem(sys.modules, "pynvml", build([FakeGpu(GPU0)], init_error=code))
        tracker = started(capture)
        names = {p.name for p in capture.collect()}
        assert not any(n.startswith("hw.") for n in names) and "process.memory.usage" in names
        assert lezea_warnings() == []
        assert any("NVML is not available" in r.getMessage() for r in caplog.records)
        tracker.finalize_experiment()

    def test_without_nvidia_ml_py(self, capture, monkeypatch):
        """pynvml not installed: the run goes on without GPU metrics."""
        monkeypatch.setitem(sys.modules, "pynvml", None)
        tracker = started(capture)
        assert not any(p.name.startswith("hw.") for p in capture.collect())
        tracker.finalize_experiment()


class TestScopeResources:
    def test_scope_span_carries_energy_and_cpu(self, capture, gpus):
        """A scope's span gets the GPU energy spent inside it (energy counter at enter and exit) and CPU
        seconds."""
        tracker = started(capture)
        with tracker.builder_scope("b0"):
            capture.sync()  # the exporter reads the scope's start while it runs (in process: nothing to do)
            gpus[0].energy_mj += 5_000
            gpus[1].energy_mj += 2_500
            burn(0.05)
            capture.sample_observers()  # a sample inside the scope, rather than waiting for one
        with tracker.layer_scope("l1"):  # layers are off by default: many and small
            pass
        summary = tracker.finalize_experiment()
        (builder,) = capture.spans("builder")
        assert builder.attributes["lezea.resource.gpu.energy"] == pytest.approx(7.5)
        assert builder.attributes["lezea.resource.cpu.seconds"] >= 0.04
        assert "lezea.resource.cpu.seconds" not in capture.spans("layer")[0].attributes
        assert summary["scopes"]["builder:b0"]["gpu.energy"] == pytest.approx(7.5)
        observed = summary["observed"]
        assert observed["energy_joules"]["total"] == pytest.approx(7.5)
        assert observed["gpu_memory_peak_bytes"][GPU0] == 3 * 2**30
        assert {g["hw.id"] for g in observed["gpus"]} == {GPU0, GPU1}

    def test_scope_cpu_is_the_process_trees(self, capture, monkeypatch):
        """CPU burned inside a scope by a child process counts for the scope: it is the tree's, not one
        thread's."""
        monkeypatch.setitem(sys.modules, "pynvml", None)
        tracker = started(capture)
        with tracker.algorithm_scope("a0"):
            capture.sync()  # the exporter reads the scope's start while it runs
            child = subprocess.Popen([sys.executable, "-c", CHILD, "1", "0.3", "30"], stdout=subprocess.PIPE,
                                     text=True)
            try:
                assert child.stdout.readline().strip() == "done"
                capture.sample_observers()  # the child seen at its full CPU time (it lives on: killed below)
            finally:
                child.kill()
                child.wait()
                child.stdout.close()
        summary = tracker.finalize_experiment()
        (scope,) = capture.spans("algorithm")
        assert scope.attributes["lezea.resource.cpu.seconds"] >= 0.25
        assert scope.attributes["lezea.resource.memory.peak"] > 0
        assert summary["scopes"]["algorithm:a0"]["cpu.seconds"] >= 0.25

    def test_phase_gets_a_summary(self, capture, monkeypatch):
        """A phase (``tracker.span``) gets CPU seconds too, though its one record is written at its end."""
        monkeypatch.setitem(sys.modules, "pynvml", None)
        tracker = started(capture)
        capture.sample_observers()
        with tracker.span("forward"):
            burn(0.1)
        capture.sample_observers()
        summary = tracker.finalize_experiment()
        (phase,) = capture.spans("forward")
        assert phase.attributes["lezea.resource.cpu.seconds"] >= 0.07
        assert summary["phases"]["forward"]["cpu.seconds"] >= 0.07


class TestProcessTree:
    def test_children_memory_and_cpu_are_counted(self, capture, monkeypatch):
        """Children that allocate 200 MB and burn CPU raise the tree's RSS, CPU time and process count."""
        monkeypatch.setitem(sys.modules, "pynvml", None)
        tracker = started(capture)
        before_rss = capture.points("process.memory.usage")[0].value
        before_cpu = sum(p.value for p in capture.points("process.cpu.time"))
        children = [subprocess.Popen([sys.executable, "-c", CHILD, "100", "0.3", "30"],
                                     stdout=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            for child in children:
                assert child.stdout.readline().strip() == "done"
            capture.sample_observers()
            assert capture.points("lezea.process.count")[0].value >= 3
            assert capture.points("process.memory.usage")[0].value - before_rss >= 180 * 2**20
            after_cpu = sum(p.value for p in capture.points("process.cpu.time"))
            assert after_cpu - before_cpu >= 0.5
            utilization = capture.points("process.cpu.utilization")[0]
            assert utilization.value > 0 and utilization.unit == "1"
        finally:
            for child in children:
                child.kill()
                child.wait()
                child.stdout.close()
        capture.sample_observers()  # the children are gone: dropped cleanly, counters stay monotonic
        assert capture.points("lezea.process.count")[0].value == 1
        assert sum(p.value for p in capture.points("process.cpu.time")) >= after_cpu - 1e-6
        summary = tracker.finalize_experiment()
        assert summary["observed"]["cpu_hours"] * 3600 >= after_cpu - 0.01
        assert summary["observed"]["memory_peak_bytes"] >= 200 * 2**20
