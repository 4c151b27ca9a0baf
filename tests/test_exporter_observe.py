"""The exporter's observers: a trainer watched by pid from outside, and the run's heartbeat.

The trainer is a real child process (with a grandchild) that allocates and burns CPU, then blocks on
its stdin: it says "ready" when it is there to be measured, so nothing here sleeps to synchronise.
NVML is doubled at the ``pynvml`` function level (``tests/fake_nvml.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import pynvml
import pytest
from opentelemetry.sdk.metrics.export import Metric, MetricsData
from opentelemetry.sdk.resources import Resource

from lezea_otel._internal import names
from lezea_otel._internal import observers as observers_module
from lezea_otel.exporter.observe import HEARTBEAT_DESCRIPTION, ObservedMetrics
from lezea_otel.version import __version__

from .fake_nvml import FakeGpu, build

MiB = 2**20
GiB = 2**30
GPU0 = "GPU-11111111-2222-3333-4444-555555555555"
CONSTANT = {names.EXPERIMENT_ID: "exp-1", names.EXPERIMENT_NAME: "watched"}
RESOURCE = Resource({"service.name": "trainer-service", "service.instance.id": "trainer-1",
                     names.EXPERIMENT_ID: "exp-1"})

# argv: MiB to touch, CPU seconds to burn, grandchildren to start, this code. Prints "ready <pids>",
# then each stdin line "<MiB>" touches that much more and prints "grown"; stdin's end ends it.
TRAINER = """
import os, subprocess, sys, time
mib, cpu, kids, code = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
blocks = []
def grow(n):
    block = bytearray(n * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    blocks.append(block)
grow(mib)
end = time.process_time() + cpu
while time.process_time() < end:
    pass
pids, started = [os.getpid()], []
for _ in range(kids):
    kid = subprocess.Popen([sys.executable, "-c", code, str(mib), str(cpu), "0", code],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids.extend(int(p) for p in kid.stdout.readline().split()[1:])
    started.append(kid)
print("ready", *pids, flush=True)
for line in sys.stdin:
    grow(int(line))
    print("grown", flush=True)
for kid in started:
    kid.stdin.close()
    kid.wait()
"""


@dataclass
class Trainer:
    process: subprocess.Popen[str]
    pids: list[int]

    @property
    def pid(self) -> int:
        return self.process.pid

    def grow(self, mib: int) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{mib}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "grown"

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=10) == 0


@pytest.fixture
def trainer() -> Iterator[Callable[..., Trainer]]:
    started: list[subprocess.Popen[str]] = []

    def spawn(mib: int = 64, cpu_s: float = 0.1, kids: int = 1) -> Trainer:
        process = subprocess.Popen([sys.executable, "-c", TRAINER, str(mib), str(cpu_s), str(kids), TRAINER],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout is not None
        word, *pids = process.stdout.readline().split()
        assert word == "ready"
        return Trainer(process, [int(p) for p in pids])

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # the GPU tests install a fake NVML


def fake_nvml(monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu], **kwargs: Any) -> Any:
    module = build(gpus, **kwargs)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    return module


@dataclass
class Watch:
    """An ObservedMetrics with its warn/info callbacks recorded."""

    observed: ObservedMetrics
    warnings: list[tuple[str, str, str]] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)

    def metrics(self, data: MetricsData | None = None) -> dict[str, Metric]:
        data = self.observed.collect() if data is None else data
        assert data is not None
        (resource_metrics,) = data.resource_metrics
        assert resource_metrics.resource is RESOURCE
        (scope_metrics,) = resource_metrics.scope_metrics
        assert (scope_metrics.scope.name, scope_metrics.scope.version) == (names.INSTRUMENTATION_NAME, __version__)
        return {metric.name: metric for metric in scope_metrics.metrics}

    def value(self, name: str, metrics: dict[str, Metric] | None = None) -> float:
        return sum(point.value for point in (metrics or self.metrics())[name].data.data_points)  # type: ignore[union-attr]


@pytest.fixture
def watch() -> Iterator[Callable[..., Watch]]:
    made: list[ObservedMetrics] = []

    def make(pid: int, *, observers: bool = True, interval_s: float = 60.0, start: bool = True) -> Watch:
        warnings: list[tuple[str, str, str]] = []
        infos: list[str] = []
        observed = ObservedMetrics(RESOURCE, dict(CONSTANT), pid, interval_s=interval_s, gpus="job",
                                   observers=observers, warn=lambda *args: warnings.append(args),
                                   info=infos.append)
        w = Watch(observed, warnings, infos)
        made.append(w.observed)
        if start:
            w.observed.start()
        return w

    yield make
    for observed in made:
        observed.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class TestProcessTree:
    def test_the_trainers_tree_is_observed_not_the_exporters(self, watch, trainer):
        """Count, RSS and CPU time are those of the trainer and its child, measured from this other process."""
        t = trainer(mib=64, cpu_s=0.1, kids=1)
        assert t.pid != os.getpid() and len(t.pids) == 2
        w = watch(t.pid)
        metrics = w.metrics()
        expected_rss = sum(psutil.Process(pid).memory_info().rss for pid in t.pids)
        assert w.value(names.PROCESS_COUNT, metrics) == 2
        rss = w.value(names.PROCESS_MEMORY_USAGE, metrics)
        assert rss >= 2 * 64 * MiB
        assert abs(rss - expected_rss) < 16 * MiB  # both are idle on their stdin: their RSS holds still
        assert w.value(names.PROCESS_CPU_TIME, metrics) >= 0.2
        for point in metrics[names.PROCESS_MEMORY_USAGE].data.data_points:
            assert {k: point.attributes[k] for k in CONSTANT} == CONSTANT
        totals = w.observed.totals()
        assert totals["processes"] == 2 and totals["memory_peak_bytes"] >= 2 * 64 * MiB
        assert w.warnings == []

    def test_the_sampler_follows_the_trainer(self, watch, trainer):
        """Memory the trainer touches after start shows in a later collection, with no call but collect()."""
        t = trainer(mib=16, cpu_s=0.0, kids=0)
        w = watch(t.pid, interval_s=0.02)
        before = w.value(names.PROCESS_MEMORY_USAGE)
        t.grow(96)
        wait_for(lambda: w.value(names.PROCESS_MEMORY_USAGE) - before >= 90 * MiB)


class TestGpu:
    def test_gpu_metrics_and_the_trainers_gpu_memory(self, watch, trainer, monkeypatch):
        """With a GPU, hw.gpu metrics appear; per-process GPU memory is the trainer's, not the exporter's."""
        t = trainer(mib=8, cpu_s=0.0, kids=0)
        fake_nvml(monkeypatch, [FakeGpu(GPU0, processes=[(t.pid, 3 * GiB), (os.getpid(), GiB)])])
        w = watch(t.pid)
        metrics = w.metrics()
        assert metrics[names.GPU_UTILIZATION].data.data_points[0].value == 0.5
        assert metrics[names.GPU_MEMORY_USAGE].data.data_points[0].attributes[names.HW_ID] == GPU0
        (process_memory,) = metrics[names.PROCESS_GPU_MEMORY].data.data_points
        assert process_memory.attributes["process.pid"] == t.pid and process_memory.value == 3 * GiB
        assert w.observed.totals()["gpus"][0]["hw.id"] == GPU0
        assert w.warnings == []

    def test_no_gpu_is_one_info_line_and_no_warning(self, watch, trainer, monkeypatch):
        """NVML that cannot start leaves the process metrics, one console line, nothing to warn about."""
        fake_nvml(monkeypatch, [], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        w = watch(trainer(mib=8, cpu_s=0.0, kids=0).pid)
        metrics = w.metrics()
        assert names.PROCESS_MEMORY_USAGE in metrics
        assert not [name for name in metrics if name.startswith("hw.")]
        assert len(w.infos) == 1 and "NVML" in w.infos[0]
        assert w.warnings == []


class TestHeartbeat:
    def test_advances_with_the_runs_attributes_and_resource(self, watch, trainer):
        """Each collection stamps the time: a later one is later, on the trainer's resource and attributes."""
        w = watch(trainer(mib=8, cpu_s=0.0, kids=0).pid, observers=False)
        first = w.metrics()[names.RUN_HEARTBEAT]
        (point,) = first.data.data_points
        wait_for(lambda: time.time() > point.value)
        (later,) = w.metrics()[names.RUN_HEARTBEAT].data.data_points
        assert later.value > point.value and abs(later.value - time.time()) < 5
        assert dict(point.attributes) == CONSTANT
        assert (first.unit, first.description) == (names.UNIT_SECONDS, HEARTBEAT_DESCRIPTION)

    def test_goes_stale_when_the_trainer_exits(self, watch, trainer):
        """A dead trainer has no heartbeat, even though its exporter still collects."""
        t = trainer(mib=8, cpu_s=0.0, kids=0)
        w = watch(t.pid)
        assert names.RUN_HEARTBEAT in w.metrics()
        t.exit()
        data = w.observed.collect()
        assert data is None or names.RUN_HEARTBEAT not in w.metrics(data)

    def test_observers_off_leaves_only_the_heartbeat(self, watch, trainer, monkeypatch):
        """observers=False samples nothing: no process or GPU metric, no NVML line, no totals."""
        fake_nvml(monkeypatch, [FakeGpu(GPU0)])
        w = watch(trainer(mib=8, cpu_s=0.0, kids=0).pid, observers=False)
        assert set(w.metrics()) == {names.RUN_HEARTBEAT}
        assert w.observed.totals() == {} and w.infos == [] and w.warnings == []


class TestLifecycle:
    def test_psutil_refusing_is_one_warning_and_the_heartbeat_goes_on(self, watch, trainer, monkeypatch):
        """Observers that cannot start cost one warning and their metrics, never the run's liveness."""
        def refuse(pid: int) -> None:
            raise psutil.AccessDenied(pid)

        monkeypatch.setattr(observers_module, "ProcessSampler", refuse)
        w = watch(trainer(mib=8, cpu_s=0.0, kids=0).pid)
        assert set(w.metrics()) == {names.RUN_HEARTBEAT}
        ((call, problem, detail),) = w.warnings
        assert (call, problem) == ("start", "resource observers could not start") and "AccessDenied" in detail
        assert w.observed.totals() == {}

    def test_stop_is_idempotent_and_keeps_the_last_collection(self, watch, trainer):
        """After stop, collect() returns the data stop took (a final send still has it); totals stay."""
        w = watch(trainer(mib=8, cpu_s=0.0, kids=0).pid)
        w.observed.stop()
        w.observed.stop()
        final = w.observed.collect()
        assert final is not None and w.observed.collect() is final
        assert {names.RUN_HEARTBEAT, names.PROCESS_MEMORY_USAGE} <= set(w.metrics(final))
        assert w.observed.totals()["samples"] == 2  # start's sample and stop's last one

    def test_start_after_stop_starts_nothing(self, watch, trainer):
        """A late start() (the run ended first) neither raises nor starts a sampler."""
        w = watch(trainer(mib=8, cpu_s=0.0, kids=0).pid, start=False)
        w.observed.stop()
        w.observed.start()
        assert w.observed.totals() == {}
        assert not [t for t in threading.enumerate() if t.name == "lezea-otel-observers" and t.is_alive()]

    def test_collections_from_two_threads_while_stopping_all_get_data(self, watch, trainer):
        """Two followers collecting while the run stops each get data every time, never None or an error."""
        w = watch(trainer(mib=8, cpu_s=0.0, kids=0).pid, interval_s=0.01)
        results: list[MetricsData | None] = []
        errors: list[BaseException] = []
        final_seen = threading.Event()

        def follow() -> None:  # before stop each collection is new; after it, the same final one
            previous = None
            try:
                while not final_seen.is_set():
                    data = w.observed.collect()
                    results.append(data)
                    if data is not None and data is previous:
                        final_seen.set()
                    previous = data
            except BaseException as error:  # noqa: BLE001 - reported to the test thread
                errors.append(error)
                final_seen.set()

        followers = [threading.Thread(target=follow) for _ in range(2)]
        for thread in followers:
            thread.start()
        wait_for(lambda: len(results) >= 10)
        w.observed.stop()
        for thread in followers:
            thread.join(5)
        assert errors == [] and final_seen.is_set()
        assert all(data is not None for data in results)
