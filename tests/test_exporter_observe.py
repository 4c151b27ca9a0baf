"""The exporter's observers: a trainer watched by pid from outside, the run's heartbeat, and the
per-scope resource windows (their arithmetic, their sharing between followers, their hook in the spans).

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

from lezea_otel import semconv as names
from lezea_otel.exporter import AuditRecord, RunConverter
from lezea_otel.exporter import observers as observers_module
from lezea_otel.exporter.observe import HEARTBEAT_DESCRIPTION, ObservedMetrics, ScopeWindows
from lezea_otel.exporter.windows import History, Point
from lezea_otel.version import __version__

from .fake_nvml import FakeGpu, build

MiB = 2**20
GiB = 2**30
GPU0 = "GPU-11111111-2222-3333-4444-555555555555"
CONSTANT = {names.EXPERIMENT_ID: "exp-1", names.EXPERIMENT_NAME: "watched"}
RESOURCE = Resource({"service.name": "trainer-service", "service.instance.id": "trainer-1",
                     names.EXPERIMENT_ID: "exp-1"})

# argv: MiB to touch, CPU seconds to burn, grandchildren to start, this code. Prints "ready <pids>",
# then each stdin line "<MiB>" touches that much more and prints "grown", "cpu <seconds>" burns that
# much CPU and prints "burned"; stdin's end ends it.
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
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
burn(cpu)
pids, started = [os.getpid()], []
for _ in range(kids):
    kid = subprocess.Popen([sys.executable, "-c", code, str(mib), str(cpu), "0", code],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids.extend(int(p) for p in kid.stdout.readline().split()[1:])
    started.append(kid)
print("ready", *pids, flush=True)
for line in sys.stdin:
    if line.startswith("cpu "):
        burn(float(line.split()[1]))
        print("burned", flush=True)
        continue
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

    def burn(self, cpu_s: float) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"cpu {cpu_s}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "burned"

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
        assert (scope_metrics.scope.name, scope_metrics.scope.version) == (
            names.INSTRUMENTATION_NAME, __version__)
        return {metric.name: metric for metric in scope_metrics.metrics}

    def value(self, name: str, metrics: dict[str, Metric] | None = None) -> float:
        return sum(point.value for point in (metrics or self.metrics())[name].data.data_points)  # type: ignore[union-attr]


@pytest.fixture
def watch() -> Iterator[Callable[..., Watch]]:
    made: list[ObservedMetrics] = []

    def make(pid: int, *, observers: bool = True, interval_s: float = 60.0, start: bool = True,
             point_gap_s: float = 0.0) -> Watch:
        warnings: list[tuple[str, str, str]] = []
        infos: list[str] = []
        observed = ObservedMetrics(RESOURCE, dict(CONSTANT), pid, interval_s=interval_s, gpus="job",
                                   observers=observers, warn=lambda *args: warnings.append(args),
                                   info=infos.append, point_gap_s=point_gap_s)
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
        """Count, RSS and CPU time are those of the trainer and its child, measured from this other
        process."""
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
        samplers = {t for t in threading.enumerate() if t.name == "lezea-otel-observers"}  # other tests' too
        w.observed.start()
        assert w.observed.totals() == {}
        assert {t for t in threading.enumerate() if t.name == "lezea-otel-observers"} <= samplers

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


def burn(cpu_s: float) -> None:
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass


class TestHistory:
    """The window arithmetic: counters between two points by linear interpolation, with a bound on the
    error."""

    @staticmethod
    def two_points() -> History:
        history = History()
        history.add(Point(1_000_000_000, 10.0, 100, {GPU0: 50.0}))
        history.add(Point(3_000_000_000, 12.0, 300, {GPU0: 70.0}))
        return history

    def test_interpolates_between_points(self):
        estimate = self.two_points().estimate(2_000_000_000)
        assert estimate is not None
        assert estimate.cpu_s == pytest.approx(11.0) and estimate.energy == {GPU0: pytest.approx(60.0)}
        assert estimate.rss == 100  # the last point's at or before the instant
        assert estimate.uncertainty_s == pytest.approx(0.5)  # (1 s)(1 s) / (2 s)

    def test_exact_at_a_point(self):
        at = self.two_points().estimate(3_000_000_000)
        assert at is not None and at.cpu_s == 12.0 and at.uncertainty_s == 0

    def test_before_the_first_point_off_by_the_time_until_it(self):
        """A scope that began before the observers: counted from their first point, with that gap as its
        uncertainty; without any point, nothing."""
        before = self.two_points().estimate(250_000_000)
        assert before is not None and before.cpu_s == 10.0 and before.uncertainty_s == pytest.approx(0.75)
        assert History().estimate(0) is None

    def test_after_the_last_point_off_by_the_time_since(self):
        after = self.two_points().estimate(4_500_000_000)
        assert after is not None and after.cpu_s == 12.0 and after.uncertainty_s == pytest.approx(1.5)

    def test_a_gpu_missing_at_either_point_is_left_out(self):
        history = self.two_points()
        history.add(Point(5_000_000_000, 13.0, 300, {}))  # GPU0's counter could not be read
        estimate = history.estimate(4_000_000_000)
        assert estimate is not None and estimate.energy == {}

    def test_bounded_yet_covers_the_oldest(self):
        """Full, the older half is thinned: the newest point stays, and the first one, so a long window's
        start is still found (coarser)."""
        history = History(limit=8)
        for i in range(100):
            history.add(Point(i * 10**9, float(i), 0, {}))
        assert len(history) <= 8
        assert history.latest is not None and history.latest.time_ns == 99 * 10**9
        old, mid = history.estimate(0), history.estimate(50 * 10**9 + 5 * 10**8)
        assert old is not None and old.cpu_s == 0.0
        assert mid is not None and mid.cpu_s == pytest.approx(50.5)  # these counters grow linearly


@pytest.fixture
def windows(watch):
    def make(pid: int, *, levels: tuple[str, ...] = ("builder", "phase"), readers: int = 1,
             observers: bool = True) -> ScopeWindows:
        w = watch(pid, observers=observers)
        return ScopeWindows(lambda: w.observed, levels, readers=readers)

    return make


BUILDER = ("scopes", "builder:b")


class TestScopeWindows:
    def test_cpu_is_the_trainers_not_the_exporters(self, windows, trainer):
        """Inside the window the exporter burns 0.4 s and the trainer 0.2 s: the summary is the trainer's."""
        t = trainer(mib=8, cpu_s=0.0, kids=0)
        scopes = windows(t.pid)
        scopes.open(1, "builder", time.time_ns())
        burn(0.4)
        t.burn(0.2)
        summary = scopes.close(1, time.time_ns(), BUILDER)
        assert 0.15 <= summary[names.SCOPE_CPU_SECONDS] <= 0.3
        assert summary[names.SCOPE_MEMORY_PEAK] >= 8 * MiB

    def test_a_follower_behind_gets_the_same_summary(self, windows, trainer):
        """Two destinations: the first follower to read the scope measures it, the one behind gets that."""
        t = trainer(mib=8, cpu_s=0.0, kids=0)
        scopes = windows(t.pid, readers=2)
        start = time.time_ns()
        scopes.open(7, "builder", start)
        t.burn(0.05)
        end = time.time_ns()
        first = scopes.close(7, end, BUILDER)
        t.burn(0.1)  # later work must not reach the late follower's copy
        scopes.open(7, "builder", start)  # the follower behind reads the same records
        assert scopes.close(7, end, BUILDER) == first and first[names.SCOPE_CPU_SECONDS] > 0.03
        assert scopes.close(7, end, BUILDER) == {}  # both have it: nothing is kept
        folded = scopes.summaries()["scopes"]["builder:b"]
        assert folded["measured"] == 1
        assert folded["cpu.seconds"] == pytest.approx(first[names.SCOPE_CPU_SECONDS])

    def test_summaries_fold_as_the_run_summary_does(self, windows, trainer):
        t = trainer(mib=8, cpu_s=0.0, kids=0)
        scopes = windows(t.pid)
        made = []
        for span_id in (1, 2):
            scopes.open(span_id, "builder", time.time_ns())
            t.burn(0.03)
            made.append(scopes.close(span_id, time.time_ns(), BUILDER))
        folded = scopes.summaries()["scopes"]["builder:b"]
        assert folded["measured"] == 2
        assert folded["cpu.seconds"] == pytest.approx(sum(m[names.SCOPE_CPU_SECONDS] for m in made))
        assert folded["memory.peak"] == max(m[names.SCOPE_MEMORY_PEAK] for m in made)
        assert folded["approximate"] == sum(m[names.SCOPE_RESOURCES_APPROXIMATE] for m in made)

    def test_levels_not_chosen_and_no_observers_get_nothing(self, windows, trainer):
        t = trainer(mib=8, cpu_s=0.0, kids=0)
        scopes = windows(t.pid)
        scopes.open(2, "layer", time.time_ns())
        assert scopes.close(2, time.time_ns(), ("scopes", "layer:l")) == {}
        off = windows(t.pid, observers=False)
        off.open(3, "builder", time.time_ns())
        assert off.close(3, time.time_ns(), BUILDER) == {}
        assert scopes.summaries() == off.summaries() == {"scopes": {}, "phases": {}}


class RecordingWindows:
    """A ``spans.Windows`` that records its calls and measures 1.5 CPU seconds for everything."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def open(self, span_id: int, level: str, start_ns: int) -> None:
        self.calls.append(("open", span_id, level, start_ns))

    def close(self, span_id: int, end_ns: int, key: tuple[str, str]) -> dict[str, Any]:
        self.calls.append(("close", span_id, end_ns, key))
        return {names.SCOPE_CPU_SECONDS: 1.5}


TRACE, ROOT, SCOPE_SPAN, PHASE_SPAN = 0xABC, 0x1, 0x2, 0x3


def record(seq: int, kind: str, time_ns: int, span_id: int, scope: str = "", **data: Any) -> AuditRecord:
    return AuditRecord(seq=seq, time_ns=time_ns, kind=kind, step=None, scope=scope, trace_id=TRACE,
                       span_id=span_id, data=data)


START = record(1, "experiment_start", 1_000, ROOT, experiment_id="exp-1", name="n")
SCOPE_START = record(2, "scope_start", 2_000, SCOPE_SPAN, "builder:b", level="builder", id="b")


def scope_end(seq: int, time_ns: int, **data: Any) -> AuditRecord:
    return record(seq, "scope_end", time_ns, SCOPE_SPAN, "builder:b", level="builder", id="b", **data)


class TestSpansGetTheirWindows:
    def test_scope_and_phase_spans_carry_what_was_measured(self):
        """A scope's window opens at its start record and closes at its end; a phase's at its one record,
        back from its end by its duration."""
        measured = RecordingWindows()
        batch = RunConverter(windows=measured).feed([
            START, SCOPE_START,
            record(3, "phase", 5_000, PHASE_SPAN, "builder:b", name="forward", duration_s=2e-6),
            scope_end(4, 9_000, duration_s=7e-6)])
        assert measured.calls == [("open", SCOPE_SPAN, "builder", 2_000),
                                  ("open", PHASE_SPAN, "phase", 3_000),
                                  ("close", PHASE_SPAN, 5_000, ("phases", "forward")),
                                  ("close", SCOPE_SPAN, 9_000, ("scopes", "builder:b"))]
        spans = {span.name: span for span in batch.spans}
        assert spans["builder"].attributes[names.SCOPE_CPU_SECONDS] == 1.5
        assert spans["forward"].attributes[names.SCOPE_CPU_SECONDS] == 1.5
        assert names.SCOPE_CPU_SECONDS not in spans[names.STARTED_SPAN_NAME].attributes

    def test_resources_in_the_record_win(self):
        """An audit written with its own summaries keeps them; the window is released all the same."""
        measured = RecordingWindows()
        batch = RunConverter(windows=measured).feed([
            START, SCOPE_START, scope_end(3, 9_000, resources={names.SCOPE_CPU_SECONDS: 9.0})])
        (scope,) = [span for span in batch.spans if span.name == "builder"]
        assert scope.attributes[names.SCOPE_CPU_SECONDS] == 9.0
        assert measured.calls[-1][0] == "close"

    def test_records_before_the_cursor_open_no_window(self):
        """Resuming: the records already delivered are past, so nothing is measured for them."""
        measured = RecordingWindows()
        converter = RunConverter(windows=measured)
        converter.skip([START, SCOPE_START])
        batch = converter.feed([scope_end(3, 9_000)])
        assert measured.calls == []
        (scope,) = batch.spans
        assert names.SCOPE_CPU_SECONDS not in scope.attributes
        converter.feed([record(4, "scope_start", 10_000, 0x9, "tasker:t", level="tasker", id="t")])
        assert measured.calls == [("open", 0x9, "tasker", 10_000)]  # live again after the skip

    def test_a_crash_closes_the_open_windows(self):
        measured = RecordingWindows()
        converter = RunConverter(windows=measured)
        converter.feed([START, SCOPE_START])
        batch = converter.end_crashed(7_000)
        assert ("close", SCOPE_SPAN, 7_000, ("scopes", "builder:b")) in measured.calls
        (scope,) = [span for span in batch.spans if span.name == "builder"]
        assert scope.attributes[names.SCOPE_CPU_SECONDS] == 1.5 and scope.attributes[names.SPAN_TRUNCATED]
