"""Observers on their own, through a real MeterProvider: the process tree with real child processes.

These drive ``Observers`` directly (no tracker), so they pin the interface the exporter relies on:
``sample``, ``start``/``stop``, ``open_window``/``close_window`` and ``totals``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from lezea_otel import semconv as names
from lezea_otel.exporter.observers import Observers

MiB = 2**20
CONSTANT = {"lezea.experiment.id": "exp-1"}

# Allocates and touches argv[1] MiB, burns argv[2] CPU seconds, says "done", then sleeps argv[3] seconds.
CHILD = """
import sys, time
block = bytearray(int(sys.argv[1]) * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
end = time.process_time() + float(sys.argv[2])
while time.process_time() < end:
    pass
print("done", flush=True)
time.sleep(float(sys.argv[3]))
"""


@dataclass
class Harness:
    """Observers wired to an in-memory reader, with the tracker's warn/info callbacks recorded."""

    reader: InMemoryMetricReader
    provider: MeterProvider
    observers: Observers
    warnings: list[tuple[str, str, str]] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, interval_s: float = 60.0, gpus: str = "job", pid: int | None = None,
             point_gap_s: float = 0.0) -> Harness:
        """``point_gap_s`` 0: every boundary newer than the latest point takes one (deterministic windows)."""
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        warnings: list[tuple[str, str, str]] = []
        infos: list[str] = []
        observers = Observers(provider.get_meter("lezea_otel"), dict(CONSTANT), interval_s, gpus,
                              lambda call, problem, detail: warnings.append((call, problem, detail)),
                              infos.append, pid=pid, point_gap_s=point_gap_s)
        return cls(reader, provider, observers, warnings, infos)

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return list(metric.data.data_points) if metric is not None else []

    def value(self, name: str) -> float:
        return sum(p.value for p in self.points(name))

    def problems(self) -> set[str]:
        """Distinct problems, as the tracker's once-per-problem warning would show them."""
        return {problem for _call, problem, _detail in self.warnings}

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no GPU part here: see test_observers_gpu.py


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []

    def spawn(mib: int, cpu_s: float, linger_s: float = 60.0) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(mib), str(cpu_s), str(linger_s)],
                                 stdout=subprocess.PIPE, text=True)
        started.append(child)
        return child

    yield spawn
    for child in started:
        child.kill()
        child.wait()
        child.stdout.close()


def wait_done(*processes: subprocess.Popen) -> None:
    for process in processes:
        assert process.stdout.readline().strip() == "done"


def burn(cpu_s: float) -> None:
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass


class TestTree:
    def test_children_memory_cpu_and_count(self, harness, children):
        """Two children touching 200 MiB and burning 0.5 CPU-s each raise RSS, CPU time and the count."""
        h = harness()
        h.observers.sample()
        rss_before, cpu_before = h.value(names.PROCESS_MEMORY_USAGE), h.value(names.PROCESS_CPU_TIME)
        assert h.value(names.PROCESS_COUNT) == 1
        workers = [children(200, 0.5) for _ in range(2)]
        wait_done(*workers)
        h.observers.sample()
        assert h.value(names.PROCESS_COUNT) == 3
        assert h.value(names.PROCESS_MEMORY_USAGE) - rss_before >= 2 * 190 * MiB
        assert h.value(names.PROCESS_CPU_TIME) - cpu_before >= 0.9
        assert h.value(names.PROCESS_THREAD_COUNT) >= 3
        metrics = h.metrics()
        assert metrics[names.PROCESS_MEMORY_USAGE].unit == "By"
        cpu_time = metrics[names.PROCESS_CPU_TIME]
        assert cpu_time.unit == "s" and cpu_time.data.is_monotonic
        modes = {p.attributes[names.CPU_MODE] for p in h.points(names.PROCESS_CPU_TIME)}
        assert modes == {"user", "system"}
        for point in h.points(names.PROCESS_MEMORY_USAGE):
            assert point.attributes["lezea.experiment.id"] == "exp-1"
        (utilization,) = h.points(names.PROCESS_CPU_UTILIZATION)
        assert 0 < utilization.value <= 1.0 + 1e-6 and metrics[names.PROCESS_CPU_UTILIZATION].unit == "1"

    def test_exited_children_are_dropped_and_counters_stay_monotonic(self, harness, children):
        """A child that exits (reaped, or a zombie) is dropped without error; CPU time never goes back."""
        h = harness()
        short, zombie = children(20, 0.3, linger_s=0), children(20, 0.3, linger_s=0)
        wait_done(short, zombie)
        h.observers.sample()
        cpu_seen = h.value(names.PROCESS_CPU_TIME)
        short.wait()
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        h.observers.sample()  # one child reaped, the other a zombie: neither may raise
        assert h.value(names.PROCESS_CPU_TIME) >= cpu_seen - 1e-9  # summed in another order
        zombie.wait()
        h.observers.sample()
        assert h.value(names.PROCESS_COUNT) == 1
        assert h.value(names.PROCESS_CPU_TIME) >= cpu_seen - 1e-9
        assert h.warnings == []

    def test_pid_observes_another_tree(self, harness, children):
        """``pid`` picks the root: a launcher and its two children, without this test process."""
        launcher = subprocess.Popen([sys.executable, "-c", (
            "import subprocess, sys, time\n"
            f"child = [sys.executable, '-c', {CHILD!r}, '50', '0', '60']\n"
            "procs = [subprocess.Popen(child) for _ in range(2)]\n"
            "time.sleep(60)\n")])
        try:
            deadline = time.monotonic() + 20
            while len(psutil.Process(launcher.pid).children()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            h = harness(pid=launcher.pid)
            h.observers.sample()
            assert h.value(names.PROCESS_COUNT) == 3
            tree = [launcher.pid, *(c.pid for c in psutil.Process(launcher.pid).children(recursive=True))]
            assert os.getpid() not in tree
        finally:
            for child in psutil.Process(launcher.pid).children(recursive=True):
                child.kill()
            launcher.kill()
            launcher.wait()

    def test_host_metrics(self, harness):
        h = harness()
        h.observers.sample()
        memory = psutil.virtual_memory()
        assert 0 < h.value(names.SYSTEM_MEMORY_USAGE) <= memory.total
        assert 0 < h.value(names.SYSTEM_MEMORY_UTILIZATION) < 1
        assert h.metrics()[names.SYSTEM_MEMORY_USAGE].unit == "By"


class TestSampler:
    def test_start_samples_now_and_stop_is_prompt(self, harness):
        """start() samples at once on one daemon thread; stop() wakes it, joins, and takes a last sample."""
        h = harness(interval_s=30.0)
        before = {t.ident for t in threading.enumerate()}
        h.observers.start()
        assert h.value(names.PROCESS_COUNT) == 1
        started = [t for t in threading.enumerate() if t.ident not in before]
        assert len(started) == 1 and started[0].daemon
        began = time.monotonic()
        h.observers.stop()
        assert time.monotonic() - began < 5
        assert not started[0].is_alive()
        assert h.observers.totals()["samples"] >= 2

    def test_utilization_is_never_a_fake_zero(self, harness, children):
        """The first exported CPU utilization reflects real work, not a 0 from an unprimed counter."""
        h = harness(interval_s=0.2)
        h.observers.start()
        first = [p.value for p in h.points(names.PROCESS_CPU_UTILIZATION)]
        assert all(v > 0 for v in first)  # absent until two samples exist is fine; 0 is not
        children(1, 60)  # a child burning CPU for the rest of the test (killed at teardown)
        time.sleep(1.0)  # several sampler windows, all inside the busy stretch
        (utilization,) = h.points(names.PROCESS_CPU_UTILIZATION)
        assert utilization.value > 0.02  # one busy child of a 2-core box is ~0.5 when nothing competes

    def test_callbacks_read_the_snapshot_only(self, harness):
        """A metric collection never calls psutil: it only reads what the sampler left."""
        h = harness()
        h.observers.sample()

        def forbidden(*_args: Any, **_kwargs: Any) -> None:
            raise AssertionError("psutil called from a metric callback")

        with pytest.MonkeyPatch.context() as patch:
            for name in ("children", "cpu_times", "memory_info", "num_threads", "io_counters"):
                patch.setattr(psutil.Process, name, forbidden)
            patch.setattr(psutil, "virtual_memory", forbidden)
            patch.setattr(psutil, "cpu_percent", forbidden)
            assert h.value(names.PROCESS_COUNT) == 1
            assert h.value(names.PROCESS_MEMORY_USAGE) > 0


def now() -> int:
    return time.time_ns()


def count_tree_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at each walk of the process tree (each point or sample)."""
    reads: list[int] = []
    children_of = psutil.Process.children
    monkeypatch.setattr(psutil.Process, "children",
                        lambda self, **kw: reads.append(1) or children_of(self, **kw))
    return reads


class TestWindows:
    """Scope windows, cut from points at the records' own times (``_internal/windows.py``)."""

    def test_window_is_the_trees_cpu_and_peak_rss(self, harness, children):
        """A child's CPU time and memory inside the window count: psutil over the tree, not this thread."""
        h = harness()
        h.observers.sample()
        token = h.observers.open_window(now())
        wait_done(children(100, 0.4))
        summary = h.observers.close_window(token, now())
        assert summary[names.SCOPE_CPU_SECONDS] >= 0.35
        assert summary[names.SCOPE_MEMORY_PEAK] >= 100 * MiB
        assert summary[names.SCOPE_RESOURCES_APPROXIMATE] is False  # both ends read at once
        assert names.SCOPE_GPU_ENERGY not in summary  # no GPU: no GPU attributes at all

    def test_a_window_read_after_its_end_is_approximate(self, harness):
        """Start and end both read later (a short scope, a phase, a backlog): the tree's average rate between
        the points around them times the duration, marked approximate."""
        h = harness()
        h.observers.sample()
        start = now()
        burn(0.1)
        end = now()
        burn(0.1)
        token = h.observers.open_window(start)  # the point taken here is after the end too
        summary = h.observers.close_window(token, end)
        # 0.2 s burned over ~0.2 s, half in the window
        assert 0.05 <= summary[names.SCOPE_CPU_SECONDS] <= 0.16
        assert summary[names.SCOPE_RESOURCES_APPROXIMATE] is True

    def test_nested_and_unknown_tokens(self, harness):
        h = harness()
        h.observers.sample()
        outer = h.observers.open_window(now())
        inner = h.observers.open_window(now())
        burn(0.05)
        inner_summary = h.observers.close_window(inner, now())
        outer_summary = h.observers.close_window(outer, now())
        assert outer_summary[names.SCOPE_CPU_SECONDS] >= inner_summary[names.SCOPE_CPU_SECONDS] > 0.03
        assert h.observers.close_window(inner, now()) == {}  # closed twice: nothing, no error

    def test_a_window_that_began_before_the_observers_is_approximate(self, harness):
        """A scope that started before the observers' first sample counts from it, and says so."""
        h = harness()
        start = now()
        burn(0.05)  # used before the first sample: not counted
        h.observers.sample()
        token = h.observers.open_window(start)
        burn(0.05)
        summary = h.observers.close_window(token, now())
        assert 0.03 <= summary[names.SCOPE_CPU_SECONDS] <= 0.08
        assert summary[names.SCOPE_RESOURCES_APPROXIMATE] is True

    def test_records_read_together_cost_one_point(self, harness, monkeypatch):
        """Boundaries older than the latest point reuse it: a backlog of scopes reads the tree once."""
        h = harness()
        h.observers.sample()
        times = [now() for _ in range(4)]
        reads = count_tree_reads(monkeypatch)
        tokens = [h.observers.open_window(t) for t in times]
        summaries = [h.observers.close_window(token, t)
                     for token, t in zip(tokens, times[1:] + [times[-1]], strict=True)]
        assert len(reads) == 1
        assert all(names.SCOPE_CPU_SECONDS in summary for summary in summaries)

    def test_points_are_spaced(self, harness, monkeypatch):
        """Scopes by the hundred a second read the tree at most once per ``point_gap_s``; such short
        windows, between points, are marked approximate."""
        h = harness(point_gap_s=60.0)
        h.observers.sample()
        reads = count_tree_reads(monkeypatch)
        summaries = []
        for _ in range(100):
            token = h.observers.open_window(now())
            summaries.append(h.observers.close_window(token, now()))
        assert reads == []
        assert all(summary[names.SCOPE_RESOURCES_APPROXIMATE] for summary in summaries)

    def test_a_point_leaves_the_exported_utilization_alone(self, harness, children):
        """The tree read for a boundary does not shorten the window the next utilization is measured over."""
        h = harness(interval_s=60.0)
        h.observers.sample()
        child = children(1, 60)  # busy for the rest of the test
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            h.observers.close_window(h.observers.open_window(now()), now())  # points, many
        h.observers.sample()
        (utilization,) = h.points(names.PROCESS_CPU_UTILIZATION)
        assert utilization.value > 0.1  # over the 0.3 s since the last sample, not the last few microseconds
        assert child.poll() is None


class TestTotals:
    def test_totals_match_what_was_exported(self, harness, children):
        h = harness()
        h.observers.sample()
        wait_done(children(150, 0.3))
        h.observers.sample()
        exported_cpu = h.value(names.PROCESS_CPU_TIME)
        exported_rss = h.value(names.PROCESS_MEMORY_USAGE)
        totals = h.observers.totals()
        assert totals["cpu_hours"] * 3600 == pytest.approx(exported_cpu, rel=1e-6)
        assert totals["memory_peak_bytes"] >= exported_rss >= 150 * MiB
        assert totals["samples"] == 2
        assert totals["gpu_hours"] == 0 and totals["energy_joules"]["total"] == 0
