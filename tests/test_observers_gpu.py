"""Observers on their own, with NVML doubled at the ``pynvml`` function level (``tests/fake_nvml.py``).

The double raises the real ``pynvml.NVMLError`` subclasses and returns NVML's own units (percent,
bytes, mW, mJ), so these tests check the conversion to OTel units and every error path.
"""

from __future__ import annotations

import os
import sys
import time

import pynvml
import pytest

from lezea_otel import semconv as names

from .fake_nvml import FakeGpu, build
from .test_observers_process import Harness

GPU0 = "GPU-11111111-2222-3333-4444-555555555555"
GPU1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
MIG0 = "MIG-9999aaaa-0000-1111-2222-333333333333"
GiB = 2**30


@pytest.fixture
def gpus(monkeypatch):
    devices = [FakeGpu(GPU0, processes=[(os.getpid(), 3 * GiB), (999_999, GiB)]),
               FakeGpu(GPU1, name="NVIDIA A100-SXM4-40GB", utilization=5, memory_total=40 * GiB)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    return install(monkeypatch, devices)


def install(monkeypatch, devices, **kwargs):
    module = build(devices, **kwargs)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    module.devices = devices
    return module


def by_id(h: Harness, name: str) -> dict[str, object]:
    """Points per GPU: a temperature sensor counts for its parent GPU, a MIG instance for itself."""
    return {p.attributes[names.HW_PARENT] if p.attributes.get(names.HW_TYPE) == "temperature"
            else p.attributes[names.HW_ID]: p for p in h.points(name)}


# name -> (unit, OTel data type, monotonic for sums)
INSTRUMENTS = {
    names.GPU_UTILIZATION: ("1", "Gauge", None),
    names.GPU_MEMORY_USAGE: ("By", "Sum", False),
    names.GPU_MEMORY_LIMIT: ("By", "Sum", False),
    names.GPU_MEMORY_UTILIZATION: ("1", "Gauge", None),
    names.HW_POWER: ("W", "Gauge", None),
    names.HW_ENERGY: ("J", "Sum", True),
    names.HW_TEMPERATURE: ("Cel", "Gauge", None),
    names.HW_ERRORS: ("{error}", "Sum", True),
    names.GPU_IO: ("By", "Sum", True),
    names.GPU_CLOCK_GRAPHICS: ("MHz", "Gauge", None),
    names.GPU_CLOCK_MEMORY: ("MHz", "Gauge", None),
    names.GPU_POWER_LIMIT: ("W", "Gauge", None),
    names.GPU_THROTTLE_REASONS: ("", "Gauge", None),
    names.PROCESS_GPU_MEMORY: ("By", "Gauge", None),  # features.md (b) suggests an updowncounter
}


class TestExport:
    def test_units_and_instrument_kinds(self, harness, gpus):
        h = harness()
        h.observers.sample()
        h.observers.sample()  # the PCIe counter integrates KB/s over the time between samples
        metrics = h.metrics()
        for name, (unit, kind, monotonic) in INSTRUMENTS.items():
            assert name in metrics, name
            assert metrics[name].unit == unit, name
            assert type(metrics[name].data).__name__ == kind, name
            if monotonic is not None:
                assert metrics[name].data.is_monotonic is monotonic, name

    def test_values_converted_from_nvml_units(self, harness, gpus):
        h = harness()
        h.observers.sample()
        assert by_id(h, names.GPU_UTILIZATION)[GPU0].value == 0.5  # 50 %
        assert by_id(h, names.GPU_UTILIZATION)[GPU1].value == 0.05
        assert by_id(h, names.GPU_MEMORY_USAGE)[GPU0].value == 10 * GiB  # bytes stay bytes
        assert by_id(h, names.GPU_MEMORY_LIMIT)[GPU1].value == 40 * GiB
        assert by_id(h, names.GPU_MEMORY_UTILIZATION)[GPU1].value == 0.25  # used / total, not NVML's .memory
        assert by_id(h, names.HW_POWER)[GPU0].value == 300.0  # 300 000 mW
        assert by_id(h, names.HW_ENERGY)[GPU0].value == 1000.0  # 1 000 000 mJ
        assert by_id(h, names.HW_TEMPERATURE)[GPU0].value == 60
        assert by_id(h, names.GPU_POWER_LIMIT)[GPU0].value == 700.0
        assert by_id(h, names.GPU_CLOCK_GRAPHICS)[GPU0].value == 1980
        assert by_id(h, names.GPU_CLOCK_MEMORY)[GPU0].value == 2619

    def test_identity_attributes(self, harness, gpus):
        h = harness()
        h.observers.sample()
        attributes = by_id(h, names.GPU_UTILIZATION)[GPU1].attributes
        assert attributes[names.HW_ID] == GPU1 and attributes[names.HW_NAME] == "NVIDIA A100-SXM4-40GB"
        assert attributes[names.HW_VENDOR] == "nvidia" and attributes[names.GPU_INDEX] == 1
        assert attributes[names.GPU_DRIVER] == "550.54.15" and attributes["lezea.experiment.id"] == "exp-1"
        assert attributes[names.HW_GPU_TASK] == "general"
        temperature = by_id(h, names.HW_TEMPERATURE)[GPU0].attributes
        assert temperature[names.HW_PARENT] == GPU0 and temperature[names.HW_TYPE] == "temperature"
        assert by_id(h, names.HW_ENERGY)[GPU0].attributes[names.HW_TYPE] == "gpu"

    def test_process_gpu_memory_only_for_the_tree(self, harness, gpus):
        """NVML lists every process on the device; only PIDs of this run's tree are exported."""
        h = harness()
        h.observers.sample()
        (own,) = h.points(names.PROCESS_GPU_MEMORY)
        assert own.value == 3 * GiB and own.attributes["process.pid"] == os.getpid()
        assert own.attributes[names.HW_ID] == GPU0

    def test_pcie_counter_integrates_throughput(self, harness, gpus):
        h = harness()
        h.observers.sample()
        time.sleep(0.2)
        h.observers.sample()
        io = {(p.attributes[names.HW_ID], p.attributes[names.NETWORK_IO_DIRECTION]): p.value
              for p in h.points(names.GPU_IO)}
        # 1000 KB/s out, 2000 KB/s in over >= 0.2 s
        assert io[(GPU0, "transmit")] >= 0.19 * 1000 * 1024 and io[(GPU0, "receive")] >= 0.19 * 2000 * 1024

    def test_callbacks_never_call_nvml(self, harness, gpus):
        h = harness()
        h.observers.sample()
        calls = len(gpus.calls)
        h.metrics()
        h.metrics()
        assert len(gpus.calls) == calls


class TestSelection:
    @pytest.mark.parametrize(("visible", "expected"), [
        (None, {GPU0, GPU1}), ("1", {GPU1}), ("1,0", {GPU0, GPU1}), (GPU1, {GPU1}), ("GPU-aaaaaaaa", {GPU1}),
        ("0,9,1", {GPU0}),
    ])
    def test_job_honours_cuda_visible_devices(self, harness, gpus, monkeypatch, visible, expected):
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        h = harness()
        h.observers.sample()
        assert set(by_id(h, names.GPU_UTILIZATION)) == expected

    @pytest.mark.parametrize("visible", ["", "-1"])
    def test_no_visible_device(self, harness, gpus, monkeypatch, visible):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        h = harness()
        h.observers.sample()
        assert not any(name.startswith("hw.") for name in h.metrics())
        assert len(h.infos) == 1 and h.warnings == []

    def test_all_and_uuid_list(self, harness, gpus, monkeypatch):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
        everything = harness(gpus="all")
        everything.observers.sample()
        assert set(by_id(everything, names.GPU_UTILIZATION)) == {GPU0, GPU1}
        listed = harness(gpus=f"{GPU1}")
        listed.observers.sample()
        assert set(by_id(listed, names.GPU_UTILIZATION)) == {GPU1}

    def test_mig_instance_by_uuid(self, harness, monkeypatch):
        mig = FakeGpu(MIG0, name="NVIDIA H100 80GB HBM3 MIG 1g.10gb", memory_total=10 * GiB, memory_used=GiB)
        install(monkeypatch, [FakeGpu(GPU0, mig=[mig]), FakeGpu(GPU1)])
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG0)
        h = harness()
        h.observers.sample()
        assert set(by_id(h, names.GPU_UTILIZATION)) == {MIG0}
        assert by_id(h, names.GPU_MEMORY_LIMIT)[MIG0].value == 10 * GiB


class TestErrors:
    def test_not_supported_field_is_absent(self, harness, gpus):
        """NOT_SUPPORTED for power on one device: that value is absent, one problem, everything else stays."""
        gpus.devices[1].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_NOT_SUPPORTED
        h = harness()
        for _ in range(3):
            h.observers.sample()
        assert set(by_id(h, names.HW_POWER)) == {GPU0}
        assert set(by_id(h, names.GPU_UTILIZATION)) == {GPU0, GPU1}
        (problem,) = h.problems()
        assert GPU1 in problem and "NotSupported" in problem
        assert all(call == "observers" for call, _p, _d in h.warnings)
        assert gpus.calls.count("nvmlDeviceGetPowerUsage") == 3 + 1  # GPU0 each time, GPU1 tried once

    def test_lost_gpu_is_dropped(self, harness, gpus):
        h = harness()
        h.observers.sample()
        token = h.observers.open_window(time.time_ns())
        gpus.devices[0].errors["nvmlDeviceGetUtilizationRates"] = pynvml.NVML_ERROR_GPU_IS_LOST
        gpus.devices[0].errors["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVML_ERROR_GPU_IS_LOST
        gpus.devices[1].energy_mj += 4_000
        h.observers.sample()
        h.observers.sample()
        summary = h.observers.close_window(token, time.time_ns())
        assert set(by_id(h, names.GPU_UTILIZATION)) == {GPU1}
        assert set(by_id(h, names.GPU_MEMORY_USAGE)) == {GPU1}
        (problem,) = h.problems()
        assert "lost" in problem and GPU0 in problem
        assert summary[names.SCOPE_GPU_ENERGY] == pytest.approx(4.0)
        assert h.observers.totals()["samples"] == 3

    def test_no_permission_is_absent(self, harness, gpus):
        gpus.devices[1].errors["nvmlDeviceGetComputeRunningProcesses"] = pynvml.NVML_ERROR_NO_PERMISSION
        gpus.devices[1].processes = [(os.getpid(), GiB)]
        h = harness()
        h.observers.sample()
        h.observers.sample()
        assert {p.attributes[names.HW_ID] for p in h.points(names.PROCESS_GPU_MEMORY)} == {GPU0}
        (problem,) = h.problems()
        assert "NoPermission" in problem and GPU1 in problem

    def test_used_gpu_memory_unavailable(self, harness, gpus):
        """usedGpuMemory None (NVML_VALUE_NOT_AVAILABLE): no point, one problem, device memory stays."""
        gpus.devices[0].processes = [(os.getpid(), None)]
        h = harness()
        h.observers.sample()
        h.observers.sample()
        assert h.points(names.PROCESS_GPU_MEMORY) == []
        assert by_id(h, names.GPU_MEMORY_USAGE)[GPU0].value == 10 * GiB
        (problem,) = h.problems()
        assert "usedGpuMemory" in problem

    def test_other_nvml_error_skips_one_value(self, harness, gpus):
        gpus.devices[0].errors["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_UNKNOWN
        h = harness()
        h.observers.sample()
        assert set(by_id(h, names.HW_TEMPERATURE)) == {GPU1}
        assert set(by_id(h, names.HW_POWER)) == {GPU0, GPU1}
        assert len(h.problems()) == 1

    @pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
                                      pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
    def test_no_driver(self, harness, monkeypatch, code):
        install(monkeypatch, [FakeGpu(GPU0)], init_error=code)
        h = harness()
        h.observers.sample()
        metrics = h.metrics()
        assert not any(name.startswith(("hw.", "lezea.gpu.", "lezea.process.gpu")) for name in metrics)
        assert names.PROCESS_MEMORY_USAGE in metrics
        assert len(h.infos) == 1 and h.warnings == []
        token = h.observers.open_window(time.time_ns())
        assert names.SCOPE_GPU_ENERGY not in h.observers.close_window(token, time.time_ns())

    def test_without_nvidia_ml_py(self, harness, monkeypatch):
        monkeypatch.setitem(sys.modules, "pynvml", None)
        h = harness()
        h.observers.sample()
        assert not any(name.startswith("hw.") for name in h.metrics())
        assert len(h.infos) == 1 and h.warnings == []


class TestWindowsAndTotals:
    def test_window_energy_reads_one_counter_per_device(self, harness, gpus):
        """A boundary reads each GPU's energy counter only, not a full sample; the energy is the
        difference."""
        h = harness()
        h.observers.sample()
        before = len(gpus.calls)
        token = h.observers.open_window(time.time_ns())
        assert gpus.calls[before:] == ["nvmlDeviceGetTotalEnergyConsumption"] * 2
        gpus.devices[0].energy_mj += 12_000
        gpus.devices[1].energy_mj += 500
        h.observers.sample()  # inside the window: its counters are the ones at the end
        summary = h.observers.close_window(token, time.time_ns())
        assert summary[names.SCOPE_GPU_ENERGY] == pytest.approx(12.5)
        assert summary[names.SCOPE_GPU_UTILIZATION_MEAN] == pytest.approx((0.5 + 0.05) / 2)
        assert names.SCOPE_GPU_MEMORY_PEAK in summary

    def test_window_gpu_memory_peak_is_the_trees(self, harness, gpus):
        h = harness()
        h.observers.sample()  # the tree holds 3 GiB on GPU0 (another process's 1 GiB is not ours)
        token = h.observers.open_window(time.time_ns())
        gpus.devices[0].processes = [(os.getpid(), 5 * GiB)]
        h.observers.sample()
        gpus.devices[0].processes = [(os.getpid(), 2 * GiB)]
        h.observers.sample()
        assert h.observers.close_window(token, time.time_ns())[names.SCOPE_GPU_MEMORY_PEAK] == 5 * GiB

    def test_a_window_closed_after_stop_reads_no_nvml(self, harness, gpus):
        """NVML is released at stop: a window still open closes on the points taken until then."""
        h = harness()
        h.observers.sample()
        token = h.observers.open_window(time.time_ns())
        gpus.devices[0].energy_mj += 4_000
        h.observers.stop()  # its last sample sees the energy
        after_stop = len(gpus.calls)
        summary = h.observers.close_window(token, time.time_ns())
        assert gpus.calls[after_stop:] == []
        assert summary[names.SCOPE_GPU_ENERGY] == pytest.approx(4.0)
        assert h.observers.open_window(time.time_ns()) is None

    def test_totals(self, harness, gpus):
        h = harness()
        h.observers.sample()
        gpus.devices[0].energy_mj += 30_000
        gpus.devices[1].energy_mj += 10_000
        gpus.devices[0].processes = [(os.getpid(), 6 * GiB)]
        time.sleep(0.2)
        h.observers.sample()
        totals = h.observers.totals()
        assert totals["energy_joules"][GPU0] == pytest.approx(30.0)
        assert totals["energy_joules"]["total"] == pytest.approx(40.0)
        assert totals["gpu_memory_peak_bytes"][GPU0] == 6 * GiB
        busy_s = totals["gpu_hours"] * 3600  # utilization x time between samples: 0.5 + 0.05 GPU-s per s
        assert 0.55 * 0.19 <= busy_s <= 0.55 * 2
        assert {g["hw.id"] for g in totals["gpus"]} == {GPU0, GPU1}
        assert totals["samples"] == 2
