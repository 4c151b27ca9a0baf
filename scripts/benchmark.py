"""What the tracker costs the training thread, next to the raw OpenTelemetry SDK and Logfire, in one run.

    .venv/bin/python scripts/benchmark.py            # every target of issue 12, ~2-4 minutes
    .venv/bin/python scripts/benchmark.py --quick    # smoke run, ~30 s (numbers too few to quote)

Logfire is a bench-only extra (``pip install -e ".[bench]"``), configured local-only: nothing leaves the
machine. Not a test: numbers depend on the machine and its load (printed in the header); the ratios
are what README reports and what the targets are about. Honest by construction:

- every case writes real files into a temporary folder; the tracker runs in its default exporter
  mode (``LEZEA_EXPORTER``, printed), its exporter a process beside this one;
- the cases compared are interleaved in rounds (the order rotates), a warm-up round is dropped, the
  figure is the median of the rounds' means, a ratio the median of the per-round ratios; after each
  round its background work is finished outside the timing (the SDK's batch processors flushed, the
  exporter processes idle again), so no case pays for another's; what the exporter processes spent
  meanwhile is shown (CPU on another core);
- latencies are single calls timed one by one; GC pauses are summed from ``gc.callbacks`` over one
  continuous stretch of calls per case; "cold" calls follow a copy that evicts the CPU caches, as the
  training work between two tracker calls does;
- the training loop (torch CPU, one intra-op thread by default: ``--torch-threads``) runs the same
  model from the same seed with and without the tracker, in alternating blocks, and reports both the
  time outside the phase bodies (the tracker's calls themselves) and the whole batch.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import itertools
import json
import os
import platform
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from lezea_otel import ExperimentTracker

REPO = Path(__file__).resolve().parent.parent
Call = Callable[[int], None]
METRICS = ("loss", "acc", "lr", "grad_norm")
STEPS = itertools.count(1)
"""Step numbers of every tracker call here: rounds repeat ``i``, and a repeated step is warned about."""


# --- measuring ----------------------------------------------------------------------------------

def quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's children: the exporter processes of live trackers."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def settle(deadline_s: float = 5.0) -> bool:
    """Wait until the exporter processes are idle (under 5% of a core over 50 ms): the next case starts
    with no catching-up of the one before on the other core. False when the deadline passed first."""
    end = time.monotonic() + deadline_s
    last = children_cpu_s()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = children_cpu_s()
        if now - last < 0.0025:
            return True
        last = now
    return False


@dataclass
class Case:
    """One thing timed: ``call(i)``; ``after`` finishes its background work outside the timing."""

    name: str
    call: Call
    after: Callable[[], None] = lambda: None
    means_us: list[float] = field(default_factory=list)
    exporter_us: list[float] = field(default_factory=list)
    """CPU the exporter processes spent per call (the round and its settling), on another core."""

    @property
    def mean(self) -> float:
        return statistics.median(self.means_us)

    def ratio(self, other: Case) -> float:
        """Median of the per-round ratios: each pair of rounds ran next to each other, so a machine that
        slows down for a while slows both."""
        return statistics.median(a / b for a, b in zip(self.means_us, other.means_us, strict=True))

    def ratio_quartiles(self, other: Case) -> str:
        ratios = sorted(a / b for a, b in zip(self.means_us, other.means_us, strict=True))
        return f"rounds' ratios: quartiles {quantile(ratios, 0.25):.2f}-{quantile(ratios, 0.75):.2f}"

    def row(self) -> str:
        spread = f"{min(self.means_us):.2f}-{max(self.means_us):.2f}"
        exporter = statistics.median(self.exporter_us)
        return f"{self.name:52} {self.mean:9.2f} {spread:>15} {exporter:10.2f}"


def interleave(cases: Sequence[Case], rounds: int, per_round: int) -> None:
    """Round 0 warms up and is dropped; each round rotates the order so no case always goes first."""
    settle()
    for r in range(rounds + 1):
        shift = r % len(cases)
        for case in [*cases[shift:], *cases[:shift]]:
            gc.collect()
            cpu = children_cpu_s()
            call = case.call
            start = time.perf_counter_ns()
            for i in range(per_round):
                call(i)
            elapsed = time.perf_counter_ns() - start
            case.after()
            settle()
            if r:
                case.means_us.append(elapsed / per_round / 1000)
                case.exporter_us.append((children_cpu_s() - cpu) / per_round * 1e6)


def single_calls_us(call: Call, count: int, warmup: int = 1000) -> list[float]:
    """Each call timed on its own (what the training thread waits), sorted."""
    for i in range(warmup):
        call(i)
    settle()
    gc.collect()
    clock = time.perf_counter_ns
    timings = []
    for i in range(count):
        start = clock()
        call(i)
        timings.append((clock() - start) / 1000)
    timings.sort()
    return timings


class GcPauses:
    """Sum of the collector's pauses between ``gc.callbacks`` start and stop (any thread: a pause holds
    the GIL)."""

    def __init__(self) -> None:
        self.total_ns = 0
        self.collections = [0, 0, 0]
        self._began = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter_ns()
        else:
            self.total_ns += time.perf_counter_ns() - self._began
            self.collections[info["generation"]] += 1


def gc_pauses(case: Case, count: int) -> GcPauses:
    """GC pauses over ``count`` continuous calls (long enough for the older generations to be collected)."""
    settle()
    gc.collect()
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        for i in range(count):
            case.call(i)
    finally:
        gc.callbacks.remove(pauses)
    case.after()
    return pauses


EVICT_MB = 16


def cold_calls_us(cases: Sequence[Case], count: int) -> list[float]:
    """Median µs of each case's call right after a copy the size of the last-level cache: what a call
    costs when training work between two calls has evicted the interpreter's code and data."""
    big = bytearray(EVICT_MB << 20)
    timings: list[list[float]] = [[] for _ in cases]
    for i in range(count):
        for case, out in zip(cases, timings, strict=True):
            bytes(big)
            start = time.perf_counter_ns()
            case.call(i)
            out.append((time.perf_counter_ns() - start) / 1000)
    for case in cases:
        case.after()
    return [statistics.median(out) for out in timings]


def profile_text(call: Call, count: int, top: int = 12) -> str:
    """cProfile of ``count`` calls, the ``top`` functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(count):
        call(i)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((n for n, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(["    " + lines[0].strip(), *("    " + line for line in lines[start:])])


# --- targets ------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    value: float | None
    limit: float
    unit: str
    note: str = ""
    yes_no: bool = False
    """A condition rather than a figure: ``value`` 0 when it holds."""

    def line(self) -> str:
        if self.value is None:
            return f"MISS  {self.name}: {self.note}"
        if self.yes_no:
            return f"{'PASS' if self.passed else 'MISS'}  {self.name}: {self.note}"
        passed = self.value <= self.limit
        over = "" if passed else f", {self.value / self.limit:.1f}x the target" if self.limit else ""
        note = f" ({self.note})" if self.note else ""
        return (f"{'PASS' if passed else 'MISS'}  {self.name}: {self.value:.3g}{self.unit} "
                f"(target <= {self.limit:g}{self.unit}{over}){note}")

    @property
    def passed(self) -> bool:
        return self.value is not None and self.value <= self.limit


TARGETS: list[Target] = []
PROFILES: dict[str, Call] = {}


def target(name: str, value: float | None, limit: float, unit: str = "", note: str = "") -> None:
    TARGETS.append(Target(name, value, limit, unit, note))


def condition(name: str, holds: bool, note: str) -> None:
    TARGETS.append(Target(name, 0.0 if holds else 1.0, 0.0, "", note, yes_no=True))


def section(title: str) -> None:
    print(f"\n## {title}")


def table_head() -> None:
    print(f"{'case':52} {'mean µs':>9} {'rounds µs':>15} {'exporter':>10}")


# --- the things compared --------------------------------------------------------------------------

def counting(exporter: Any) -> Any:
    """A span exporter that counts what it exported: the SDK's batch processor drops spans when its queue
    is full, and a floor that drops work must say so."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Counting(SpanExporter):
        def __init__(self) -> None:
            self.exported = 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            self.exported += len(spans)
            result: SpanExportResult = exporter.export(spans)
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(exporter.force_flush(timeout_millis))

    return Counting()


class RawSdk:
    """DESIGN.md's floor: 4 synchronous gauges + one JSON audit line; a span with the SDK's batch processor
    and the official OTLP-JSON file exporter (what the tracker's exporter writes too)."""

    def __init__(self, folder: Path) -> None:
        from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        folder.mkdir(parents=True, exist_ok=True)
        reader = PeriodicExportingMetricReader(FileMetricExporter(folder / "metrics.jsonl"),
                                               export_interval_millis=15000)
        self.meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        meter = self.meters.get_meter("raw")
        self.gauges = [meter.create_gauge(f"raw.{key}") for key in METRICS]
        self.spans = counting(FileSpanExporter(folder / "spans.jsonl"))
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.spans))
        self.tracer = self.tracer_provider.get_tracer("raw")
        self.audit = open(folder / "events.jsonl", "a", buffering=1 << 16)  # noqa: SIM115
        self.started = 0

    def step(self, i: int) -> None:
        values = {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 3e-4, "grad_norm": 1.0}
        attributes = {"lezea.experiment.id": "x", "lezea.data_split": "train"}
        for gauge, value in zip(self.gauges, values.values(), strict=True):
            gauge.set(value, attributes)
        self.audit.write(json.dumps({"seq": i, "time": time.time_ns(), "kind": "training_step", "step": i,
                                     "data": {"metrics": values}}) + "\n")

    def span(self, i: int) -> None:
        with self.tracer.start_as_current_span("forward"):
            self.started += 1

    def flush(self) -> None:
        self.tracer_provider.force_flush()

    def close(self) -> None:
        self.audit.close()
        self.tracer_provider.shutdown()
        self.meters.shutdown()


class LogfireSpans:
    """Logfire configured local-only (no token, nothing sent, no console, no metrics), its spans going
    through a batch processor into the same OTLP-JSON file exporter as the raw SDK's (like for like)."""

    def __init__(self, folder: Path) -> None:
        import logfire
        from opentelemetry.exporter.otlp.json.file import FileSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        folder.mkdir(parents=True, exist_ok=True)
        self.version = getattr(logfire, "__version__", "?")
        self.spans = counting(FileSpanExporter(folder / "spans.jsonl"))
        self.logfire = logfire.configure(local=True, send_to_logfire=False, console=False, metrics=False,
                                         additional_span_processors=[BatchSpanProcessor(self.spans)],
                                         data_dir=folder, config_dir=folder)
        self.started = 0

    def span(self, i: int) -> None:
        with self.logfire.span("forward"):
            self.started += 1

    def flush(self) -> None:
        self.logfire.force_flush()

    def close(self) -> None:
        self.logfire.shutdown()


def new_tracker(runs: Path, async_mode: bool = False, **options: Any) -> ExperimentTracker:
    tracker = ExperimentTracker("bench", runs_dir=runs, quiet=True, async_mode=async_mode, **options)
    tracker.start(prometheus_port=None)
    return tracker


def step_call(tracker: ExperimentTracker) -> Call:
    def step(i: int) -> None:
        tracker.log_training_step(next(STEPS), {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 3e-4,
                                                "grad_norm": 1.0}, data_split="train")

    return step


def spanned_step_call(tracker: ExperimentTracker) -> Call:
    def step(i: int) -> None:
        with tracker.span("step"):
            tracker.log_training_step(next(STEPS), {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 3e-4,
                                                    "grad_norm": 1.0})

    return step


# --- the cases ------------------------------------------------------------------------------------

def training_steps(root: Path, tracker: ExperimentTracker, raw: RawSdk, args: argparse.Namespace) -> None:
    section("log_training_step, 4 metrics, sync")
    floor = Case("raw SDK: 4 gauge.set + json line (floor)", raw.step)
    ours = Case("log_training_step, 4 metrics (sync)", step_call(tracker))
    interleave([floor, ours], args.rounds, args.steps // args.rounds)
    table_head()
    print(floor.row())
    print(ours.row())
    ratio = ours.ratio(floor)
    single = single_calls_us(ours.call, args.steps)
    floor_single = single_calls_us(floor.call, args.steps)
    print(f"single calls ({args.steps}): log_training_step p50 {quantile(single, 0.5):.2f} µs, "
          f"p99 {quantile(single, 0.99):.2f} µs, max {single[-1]:.0f} µs; "
          f"floor p50 {quantile(floor_single, 0.5):.2f} µs, p99 {quantile(floor_single, 0.99):.2f} µs")
    target("sync log_training_step mean / floor", ratio, 0.15, "x",
           f"{ours.mean:.2f} µs vs {floor.mean:.2f} µs")
    target("sync log_training_step p99", quantile(single, 0.99), 15, " µs")
    if ratio > 0.15 or quantile(single, 0.99) > 15:
        PROFILES["log_training_step (sync), 5000 calls"] = ours.call

    section("log_training_step, async_mode=True: the caller")
    async_tracker = new_tracker(root / "async", async_mode=True)
    caller = single_calls_us(step_call(async_tracker), args.steps)
    print(f"single calls ({args.steps}): p50 {quantile(caller, 0.5):.2f} µs, "
          f"p99 {quantile(caller, 0.99):.2f} µs, p99.9 {quantile(caller, 0.999):.1f} µs, "
          f"max {caller[-1]:.0f} µs")
    target("async caller p50", quantile(caller, 0.5), 1.5, " µs")
    target("async caller p99", quantile(caller, 0.99), 10, " µs")
    target("async caller max", caller[-1] / 1000, 2, " ms")
    # Internal, looked up defensively: how fast the worker writes what the caller hands it.
    pipeline = getattr(getattr(async_tracker, "_session", None), "pipeline", None) or getattr(
        async_tracker, "_pipeline", None)
    if pipeline is None or not hasattr(pipeline, "flush"):
        print("throughput: not measured (the tracker's pipeline was not found to flush)")
    else:
        settle()
        metrics = {"loss": 0.5, "acc": 0.5, "lr": 3e-4, "grad_norm": 1.0}
        count = args.steps * 2
        began = time.perf_counter()
        for _ in range(count):
            async_tracker.log_training_step(next(STEPS), metrics)
        submitted = time.perf_counter()
        pipeline.flush()
        drained = time.perf_counter()
        print(f"throughput ({count} back to back): caller submits {count / (submitted - began):,.0f} "
              f"steps/s, the worker writes them at {count / (drained - began):,.0f} steps/s")
    async_tracker.finalize_experiment()


def phases_and_scopes(root: Path, tracker: ExperimentTracker, raw: RawSdk, args: argparse.Namespace) -> None:
    section("a phase and a scope, enter + exit")

    def phase(i: int) -> None:
        with tracker.span("forward"):
            pass

    def scope(i: int) -> None:
        with tracker.builder_scope("42"):
            pass

    # This process has the OTel SDK loaded (the raw SDK and Logfire cases), so the tracker's scopes and phases
    # are the current OTel context (LEZEA_OTEL_CONTEXT=auto). Where nothing records spans, as in a training
    # process of its own, they are not: that tracker is timed beside it.
    os.environ["LEZEA_OTEL_CONTEXT"] = "never"  # read once, by the tracker's constructor
    try:
        bare = new_tracker(root / "bare")
    finally:
        del os.environ["LEZEA_OTEL_CONTEXT"]

    def bare_phase(i: int) -> None:
        with bare.span("forward"):
            pass

    def bare_scope(i: int) -> None:
        with bare.builder_scope("42"):
            pass

    raw_span = Case("raw SDK span (start_as_current_span, batch + file)", raw.span, raw.flush)
    cases = [raw_span, Case("tracker.span('forward') phase", phase), Case("builder_scope('42')", scope),
             Case("phase, no SDK in the process (no OTel context)", bare_phase),
             Case("scope, no SDK in the process (no OTel context)", bare_scope)]
    logfire: LogfireSpans | None = None
    logfire_problem = ""
    try:
        logfire = LogfireSpans(root / "logfire")
        cases.insert(1, Case("Logfire span (logfire.span, batch + file)", logfire.span, logfire.flush))
    except ImportError as error:
        logfire_problem = f"Logfire is not installed ({error}): pip install -e '.[bench]'"
    except Exception as error:  # noqa: BLE001 - a Logfire that cannot be configured local-only is not faked
        logfire_problem = f"Logfire could not be configured local-only: {type(error).__name__}: {error}"
    interleave(cases, args.rounds, args.steps // args.rounds)
    table_head()
    for case in cases:
        print(case.row())
    if logfire is not None:
        print(f"(Logfire {logfire.version})")
    by_name = {case.name: case for case in cases}
    ours = {"phase": by_name["tracker.span('forward') phase"], "scope": by_name["builder_scope('42')"],
            "phase without an SDK loaded": by_name["phase, no SDK in the process (no OTel context)"],
            "scope without an SDK loaded": by_name["scope, no SDK in the process (no OTel context)"]}
    for what, case in ours.items():
        target(f"{what} mean / raw SDK span", case.ratio(raw_span), 0.3, "x",
               f"{case.mean:.2f} µs vs {raw_span.mean:.2f} µs")
        if case.ratio(raw_span) > 0.3:
            PROFILES[f"{what} enter+exit, 5000 calls"] = case.call
    logfire_case = cases[1] if logfire is not None else None
    for what, case in ours.items():
        if logfire_case is None:
            target(f"{what} mean / Logfire span", None, 0.1, "x", logfire_problem)
        else:
            target(f"{what} mean / Logfire span", case.ratio(logfire_case), 0.1, "x",
                   f"{case.mean:.2f} µs vs {logfire_case.mean:.2f} µs")

    count = args.steps
    print(f"\nGC pauses over {count} continuous calls (gc.callbacks; collections per generation):")
    pauses = {case.name: gc_pauses(case, count) for case in cases}
    for name, pause in pauses.items():
        print(f"  {name:52} {pause.total_ns / 1e6:8.1f} ms  {pause.collections}")
    phase_ms = pauses[ours["phase"].name].total_ns / 1e6
    raw_ms = pauses[raw_span.name].total_ns / 1e6
    target(f"GC pauses of {count} phases vs {count} raw SDK spans", phase_ms, raw_ms, " ms")
    for exported in ((raw.spans, raw.started, "raw SDK"),
                     *(((logfire.spans, logfire.started, "Logfire"),) if logfire is not None else ())):
        spans, started, who = exported
        if spans.exported < started:
            print(f"note: the {who} batch processor dropped {started - spans.exported} of {started} spans "
                  "(queue full): its figures above do less work than they were asked")
    cold = [*cases, Case("raw SDK: 4 gauge.set + json line (floor)", raw.step),
            Case("log_training_step, 4 metrics (sync)", step_call(tracker))]
    print(f"\ncold calls: each right after a {EVICT_MB} MB copy that evicts the CPU caches, as a torch op "
          f"does between two tracker calls (median of {args.cold}):")
    for case, median in zip(cold, cold_calls_us(cold, args.cold), strict=True):
        print(f"  {case.name:52} {median:8.1f} µs")
    if logfire is not None:
        logfire.close()
    bare.finalize_experiment()


def gpu_phases(root: Path, args: argparse.Namespace) -> None:
    section("a phase with GPU timing on vs off (CUDA-event double; hardware numbers come from "
            "scripts/gpu_phase_check.py)")
    try:
        import torch  # noqa: F401 - the double is installed onto torch.cuda
    except ImportError as error:
        print(f"not measured: torch is not installed ({error})")
        return
    sys.path.insert(0, str(REPO))
    from tests.fake_cuda import installed

    with installed():  # torch.cuda looks initialised; its Event records stream times, as CUDA's do
        trackers = {}
        for timing in ("phases", "off"):
            os.environ["LEZEA_GPU_TIMING"] = timing  # read once, by the tracker's constructor
            try:
                trackers[timing] = new_tracker(root / f"gpu-{timing}")
            finally:
                del os.environ["LEZEA_GPU_TIMING"]
        on, off = trackers["phases"], trackers["off"]
        resolver = getattr(getattr(getattr(on, "_session", None), "probes", None), "resolver", None)
        queued = [0]

        def timed(i: int) -> None:
            with on.span("forward"):
                pass
            queued[0] += 1

        def untimed(i: int) -> None:
            with off.span("forward"):
                pass

        def resolved() -> None:
            """The resolver's backlog is finished outside the timing, as the batch processors are."""
            end = time.monotonic() + 10
            while resolver is not None and resolver.resolved + resolver.unresolved < queued[0] \
                    and time.monotonic() < end:
                time.sleep(0.001)

        cases = [Case("phase, GPU timing on (CUDA-event double)", timed, resolved),
                 Case("phase, LEZEA_GPU_TIMING=off (CUDA-event double)", untimed)]
        interleave(cases, args.rounds, args.steps // args.rounds)
        for tracker in (on, off):
            tracker.finalize_experiment()
    table_head()
    for case in cases:
        print(case.row())
    with_gpu = []
    for tracker in (on, off):
        with tracker.audit_path.open() as audit:
            phases = [record["data"] for record in map(json.loads, audit) if record.get("kind") == "phase"]
        with_gpu.append(f"{sum('gpu_duration_s' in data for data in phases)} of {len(phases)}")
    timed_case, untimed_case = cases
    print(f"added per phase by GPU timing: {timed_case.mean - untimed_case.mean:+.2f} µs, "
          f"{timed_case.ratio(untimed_case):.2f}x ({timed_case.ratio_quartiles(untimed_case)}); "
          f"phases with a GPU time: {with_gpu[0]} on, {with_gpu[1]} off")


def torch_training(root: Path, args: argparse.Namespace) -> None:
    section("a real training loop (torch CPU): an LSTM language model, 4 phases + 1 step per batch")
    try:
        import torch
        from torch import nn
    except ImportError as error:
        target("tracker's cost per batch", None, 0.2, " ms", f"torch is not installed ({error})")
        return
    vocab, batch, bptt, hidden_size = 1000, 20, 35, 64
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    class LanguageModel(nn.Module):  # pytorch/examples word_language_model, RNN_TYPE=LSTM, one layer
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Embedding(vocab, hidden_size)
            self.rnn = nn.LSTM(hidden_size, hidden_size, 1)
            self.decoder = nn.Linear(hidden_size, vocab)

        def forward(self, tokens: Any, hidden: Any) -> tuple[Any, Any]:
            output, hidden = self.rnn(self.encoder(tokens), hidden)
            return self.decoder(output).view(-1, vocab), hidden

    torch.manual_seed(0)
    data = torch.randint(0, vocab, (bptt * 100 + 1, batch))
    criterion = nn.CrossEntropyLoss()

    @dataclass
    class Variant:
        name: str
        phase: Callable[[str], Any]
        log: Callable[[int, float], None]
        totals: list[float] = field(default_factory=list)
        outside: list[float] = field(default_factory=list)
        exporter: list[float] = field(default_factory=list)
        forward_bodies: list[float] = field(default_factory=list)
        gaps: list[tuple[float, ...]] = field(default_factory=list)
        """Per kept batch, the stretches outside the bodies (GAPS): where a tracker call spends its time."""
        batches: int = 0

        def __post_init__(self) -> None:
            torch.manual_seed(1)  # both variants train the same model on the same data
            self.model = LanguageModel()
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
            self.hidden = (torch.zeros(1, batch, hidden_size), torch.zeros(1, batch, hidden_size))

        def run(self, count: int, keep: bool) -> None:
            clock = time.perf_counter
            model, optimizer, phase = self.model, self.optimizer, self.phase
            totals, outside = [], []
            settle()
            cpu = children_cpu_s()
            for _ in range(count):
                i = self.batches
                self.batches += 1
                began = clock()
                with phase("data"):
                    b0 = clock()
                    j = (i % 100) * bptt
                    tokens, targets = data[j:j + bptt], data[j + 1:j + 1 + bptt].reshape(-1)
                    self.hidden = (self.hidden[0].detach(), self.hidden[1].detach())
                    b1 = clock()
                with phase("forward"):
                    b2 = clock()
                    output, self.hidden = model(tokens, self.hidden)
                    loss = criterion(output, targets)
                    b3 = clock()
                with phase("backward"):
                    b4 = clock()
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 0.25)
                    b5 = clock()
                with phase("optimizer"):
                    b6 = clock()
                    optimizer.step()
                    b7 = clock()
                b8 = clock()
                value = loss.item()
                b9 = clock()
                self.log(i + 1, value)
                ended = clock()
                totals.append(ended - began)
                gaps = (b0 - began, b2 - b1, b4 - b3, b6 - b5, b8 - b7, b9 - b8, ended - b9)
                outside.append(sum(gaps))
                self.forward_bodies.append(b3 - b2)
                if keep:
                    self.gaps.append(gaps)
            if keep:
                self.totals.append(statistics.median(totals))
                self.outside.append(statistics.median(outside))
                settle()
                self.exporter.append((children_cpu_s() - cpu) / count)

    tracker = new_tracker(root / "torch")
    nothing = contextlib.nullcontext()
    without = Variant("without the tracker", lambda name: nothing, lambda step, loss: None)
    with_tracker = Variant("with the tracker", tracker.span,
                           lambda step, loss: tracker.log_training_step(step, {"loss": loss}))
    variants = [without, with_tracker]
    deadline = time.monotonic() + args.torch_seconds
    rounds = 0
    while rounds < args.torch_rounds and (rounds < 4 or time.monotonic() < deadline):
        for variant in variants if rounds % 2 else variants[::-1]:  # round 0 warms up (allocator, caches)
            variant.run(args.torch_batches, keep=rounds > 0)
        rounds += 1
    tracker.finalize_experiment()
    with tracker.audit_path.open() as audit:
        recorded = [record["data"]["duration_s"] for record in map(json.loads, audit)
                    if record.get("kind") == "phase" and record["data"].get("name") == "forward"]
    residue = sorted((r - b) * 1e6 for r, b in zip(recorded, with_tracker.forward_bodies, strict=False))
    added_total = [w - o for w, o in zip(with_tracker.totals, without.totals, strict=True)]
    added_outside = [w - o for w, o in zip(with_tracker.outside, without.outside, strict=True)]
    print(f"model: vocab {vocab}, batch {batch}, bptt {bptt}, hidden {hidden_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s) (--torch-threads); "
          f"{rounds - 1} rounds x {args.torch_batches} batches per variant (the first round warmed up), "
          "interleaved, medians")
    print(f"{'':26} {'batch ms':>9} {'outside the phase bodies µs':>28} {'exporter CPU µs/batch':>22}")
    for variant in variants:
        batch_ms = statistics.median(variant.totals) * 1e3
        outside_us = statistics.median(variant.outside) * 1e6
        exporter_us = statistics.median(variant.exporter) * 1e6
        print(f"{variant.name:26} {batch_ms:9.3f} {outside_us:28.1f} {exporter_us:22.1f}")
    outside_ms = statistics.median(added_outside) * 1e3
    total_ms = statistics.median(added_total) * 1e3
    medians = [[statistics.median(gap) * 1e6 for gap in zip(*v.gaps, strict=True)] for v in variants]
    print("outside the bodies, median µs without -> with:" + ";".join(
        f" {label} {before:.1f} -> {after:.1f}" for label, before, after in zip(GAPS, *medians, strict=True)))
    print(f"added per batch: {outside_ms * 1e3:.1f} µs on the training thread outside the phase bodies "
          f"(rounds {min(added_outside) * 1e6:.1f} to {max(added_outside) * 1e6:.1f}); whole batch "
          f"{total_ms * 1e3:+.1f} µs (rounds {min(added_total) * 1e6:+.0f} to {max(added_total) * 1e6:+.0f}: "
          "the batch's own noise)")
    if residue:
        print(f"a recorded 'forward' phase minus its body: p50 {quantile(residue, 0.5):.1f} µs, "
              f"p99 {quantile(residue, 0.99):.1f} µs (the tracker's own cost inside the span)")
    target("tracker's cost per batch (4 phases + 1 step), outside the bodies", outside_ms, 0.2, " ms")
    target("tracker's cost per batch, whole batch with - without", total_ms, 0.2, " ms",
           f"rounds {min(added_total) * 1e3:+.3f} to {max(added_total) * 1e3:+.3f} ms")


GAPS = ("enter data", "data->forward", "forward->backward", "backward->optimizer", "exit optimizer",
        "loss.item()", "log_training_step")
"""The stretches of a batch outside its 4 phase bodies, without -> with the tracker."""


def import_time(root: Path, args: argparse.Namespace) -> None:
    section("import lezea_otel in a fresh interpreter")
    code = ("import time;t=time.perf_counter();import lezea_otel;print(time.perf_counter()-t);import sys;"
            "print(any(m == 'opentelemetry.sdk' or m.startswith('opentelemetry.sdk.') for m in sys.modules))")
    runs, sdk = [], []
    # Bytecode cached, as after a regular install (pip compiles it) or any first import: an environment that
    # sets PYTHONDONTWRITEBYTECODE (this one does) would otherwise time the compiler on every import.
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import lezea_otel"], cwd=REPO, env=cached, check=True)
    for _ in range(args.imports):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                             check=True, env=cached)
        seconds, loaded = out.stdout.split()
        runs.append(float(seconds))
        sdk.append(loaded == "True")
    started = subprocess.run([sys.executable, "-c", (
        "import sys; from lezea_otel import ExperimentTracker\n"
        f"t = ExperimentTracker('imports', runs_dir={str(root / 'imports')!r}, quiet=True)\n"
        "t.start(prometheus_port=None)\n"
        "with t.builder_scope('1'):\n"
        "    with t.span('forward'):\n"
        "        t.log_training_step(1, {'loss': 0.5})\n"
        "t.log_training_step(2, {'loss': 0.4})\n"
        "print(sorted({m.split('.')[2] for m in sys.modules if m.startswith('opentelemetry.sdk.')}))\n"
        "t.finalize_experiment()")], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    every = ", ".join(f"{r:.3f}" for r in runs)
    print(f"best of {args.imports} (bytecode cached): {min(runs):.3f} s (all: {every}); "
          f"opentelemetry.sdk in sys.modules after the import: {any(sdk)}; "
          f"SDK modules after start + scope + phase + steps: {started}")
    target("import lezea_otel", min(runs), 0.1, " s")
    condition("`import lezea_otel` leaves opentelemetry.sdk out of sys.modules", not any(sdk),
              "it does" if not any(sdk) else "the SDK is imported")
    if os.environ.get("LEZEA_EXPORTER", "process") == "process":
        condition("no opentelemetry.sdk module in the trainer after start + calls (process mode)",
                  started == "[]", f"found {started}")


def delivery(root: Path, args: argparse.Namespace) -> None:
    section("collector down, up, none: the trainer's step and finalize")
    sys.path.insert(0, str(REPO))
    from tests.otlp_receiver import HttpReceiver, Received

    class TimedReceived(Received):
        """When the receiver took its last request: finalize is judged against the last delivery."""

        def __init__(self) -> None:
            super().__init__()
            self.last = 0.0

        def add(self, signal: str, request: Any, headers: dict[str, str]) -> None:
            super().add(signal, request, headers)
            self.last = time.monotonic()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    up = HttpReceiver(received=TimedReceived())
    slow = HttpReceiver()
    slow.delay_s = 10.0
    try:
        trackers = {"none": new_tracker(root / "none"), "up": new_tracker(root / "up", endpoint=up.endpoint),
                    "down (refused)": new_tracker(root / "down", endpoint=closed)}
        cases = [Case(f"span + step (4 metrics), collector {name}", spanned_step_call(tracker))
                 for name, tracker in trackers.items()]
        interleave(cases, 2 * args.rounds, args.steps // args.rounds // 2)  # more rounds: a 10% margin
        table_head()
        for case in cases:
            print(case.row())
        none, live, down = cases
        target("step with the collector down / up", down.ratio(live), 1.1, "x",
               f"within 10%: not measurable; {down.ratio_quartiles(live)}")
        target("step with the collector down / no collector", down.ratio(none), 1.1, "x",
               down.ratio_quartiles(none))

        finalize: dict[str, float] = {}
        gap: float | None = None
        summaries: dict[str, Any] = {}
        for name in ("up", "down (refused)", "none"):
            began = time.monotonic()
            summaries[name] = trackers[name].finalize_experiment() or {}
            finalize[name] = time.monotonic() - began
            if name == "up":
                gap = time.monotonic() - up.received.last if up.received.last else None  # type: ignore[attr-defined]
        if not args.quick:  # a slow collector's finalize takes the whole LEZEA_SHUTDOWN_TIMEOUT
            slow_tracker = new_tracker(root / "slow", endpoint=slow.endpoint)
            call = spanned_step_call(slow_tracker)
            for i in range(args.steps // 10):
                call(i)
            began = time.monotonic()
            summaries["slow (10 s)"] = slow_tracker.finalize_experiment() or {}
            finalize["slow (10 s)"] = time.monotonic() - began
    finally:
        up.stop()
        slow.stop()
    timeout = os.environ.get("LEZEA_SHUTDOWN_TIMEOUT", "5 (default)")
    print(f"finalize (LEZEA_SHUTDOWN_TIMEOUT {timeout} s):")
    for name, seconds in finalize.items():
        signals = (summaries[name].get("delivery") or {}).get("signals") or {}
        left = sum(counts.get("left_in_audit", 0) for counts in signals.values())
        print(f"  collector {name:16} {seconds:6.2f} s; left in the audit for `lezea-otel export`: {left}")
    target("finalize with the collector up, after the last delivery", gap, 1, " s",
           f"finalize took {finalize['up']:.2f} s")


def memory_per_step(root: Path, args: argparse.Namespace) -> None:
    section("memory")
    tracker = new_tracker(root / "memory")
    call = step_call(tracker)
    for i in range(1000):
        call(i)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(args.steps):
        call(i)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    tracker.finalize_experiment()
    print(f"growth per logged step (tracemalloc, {args.steps} steps after 1000): "
          f"{growth / args.steps:.1f} bytes")


def observer_cycle(root: Path, args: argparse.Namespace) -> None:
    section("observers (they run in the exporter, every LEZEA_OBSERVE_INTERVAL = 10 s by default)")
    from opentelemetry.sdk.resources import Resource

    from lezea_otel.exporter.observe import ObservedMetrics

    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(7)]
    try:
        tree = 1 + len(psutil.Process().children(recursive=True))
        observed = ObservedMetrics(Resource.create({}), {"lezea.experiment.id": "bench"}, os.getpid(),
                                   interval_s=3600.0, gpus="job", observers=True,
                                   warn=lambda call, problem, detail: None, info=lambda line: None)
        observed.start()

        def timed(call: Callable[[], Any], count: int) -> float:
            start = time.perf_counter_ns()
            for _ in range(count):
                call()
            return (time.perf_counter_ns() - start) / count / 1000

        sample = timed(observed.sample, args.samples)
        collect = timed(observed.collect, args.samples)
        def window_pair() -> None:
            observed.close_window(observed.open_window(time.time_ns()) or 0, time.time_ns())

        window = timed(window_pair, args.samples * 10)
        observed.stop()
    finally:
        for child in children:
            child.kill()
            child.wait()
    print(f"one collection cycle over {tree} processes (psutil, no GPU here): sample {sample:.0f} µs, "
          f"collect (MetricsData) {collect:.0f} µs; a scope's resource window open+close {window:.1f} µs")


def framework_integrations(root: Path, args: argparse.Namespace) -> None:
    section("the framework integrations (issue 27): added per training step, against the same training "
            "without them")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    from benchmark_frameworks import frameworks  # beside this script: its own module, as long as it is

    frameworks(root, args.framework_rounds, args.quick, print, settle)


SECTIONS = ("steps", "spans", "torch", "import", "delivery", "memory", "observers", "gpu", "frameworks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="calls per case (and single calls timed)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds kept (one more warms up)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of ~30 s; too few calls to quote")
    parser.add_argument("--profile", action="store_true", help="cProfile the hot calls even when on target")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads; 0: torch's own choice (all cores, shared with the "
                             "exporter process and, on a busy machine, very noisy)")
    parser.add_argument("--torch-seconds", type=float, default=45.0,
                        help="the training loop stops adding rounds past this (at least 3 are kept)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    args = parser.parse_args()
    only = set(args.only.split(","))
    args.torch_rounds, args.torch_batches, args.imports, args.samples, args.cold = 25, 15, 5, 100, 60
    args.framework_rounds = 5
    if args.quick:
        args.steps, args.rounds, args.torch_rounds, args.torch_batches, args.imports, args.samples = (
            2000, 2, 3, 10, 2, 20)
        args.cold, args.torch_seconds = 10, 5.0
    os.environ.setdefault("LEZEA_QUIET", "1")
    began = time.monotonic()
    print(f"# lezea_otel benchmark, {time.strftime('%Y-%m-%d %H:%M')}; {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"LEZEA_EXPORTER={os.environ.get('LEZEA_EXPORTER', 'process (default)')}"
          f"{'; --quick: too few calls to quote' if args.quick else ''}")
    print("µs per call: the median of the interleaved rounds' means (min-max of the rounds beside it); "
          "a ratio: the median of the per-round ratios; 'exporter': CPU µs per call spent meanwhile by the "
          "exporter processes, on another core")
    took: dict[str, float] = {}
    profiles: dict[str, str] = {}

    def run(name: str, case: Callable[..., None], *arguments: Any) -> None:
        """One section; a section that fails is a MISS with its error, and the others still run."""
        if name not in only:
            return
        start = time.monotonic()
        try:
            case(*arguments)
        except Exception as error:  # noqa: BLE001 - reported below, never hidden
            print(f"{name} failed:\n{traceback.format_exc()}")
            target(f"section {name!r}", None, 0, "", f"failed: {type(error).__name__}: {error}")
        took[name] = time.monotonic() - start

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # First, while nothing in this process has loaded the OTel SDK: a training process of its own
        # (the raw SDK and Logfire cases below load it, and the tracker's scopes would then carry the OTel
        # context, as they do in a process where the user's own tracing runs; `cold calls` shows both).
        run("torch", torch_training, root, args)
        if only & {"steps", "spans"}:
            raw = RawSdk(root / "raw")
            tracker = new_tracker(root / "runs")
            run("steps", training_steps, root, tracker, raw, args)
            run("spans", phases_and_scopes, root, tracker, raw, args)
            if args.profile:
                def phase(i: int) -> None:
                    with tracker.span("forward"):
                        pass

                PROFILES.setdefault("log_training_step (sync), 5000 calls", step_call(tracker))
                PROFILES.setdefault("phase enter+exit, 5000 calls", phase)
            profiles = {name: profile_text(call, 5000) for name, call in PROFILES.items()}
            raw.close()
            tracker.finalize_experiment()
        for name, case in (("import", import_time), ("delivery", delivery),
                           ("memory", memory_per_step), ("observers", observer_cycle),
                           ("gpu", gpu_phases), ("frameworks", framework_integrations)):
            run(name, case, root, args)
    section(f"targets (issue 12), {sum(t.passed for t in TARGETS)} of {len(TARGETS)} met")
    for item in TARGETS:
        print(item.line())
    if profiles:
        section("where the time goes (cProfile, by own time)")
        for name, text in profiles.items():
            print(f"{name}:\n{text}")
    print(f"\n{time.monotonic() - began:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in took.items())}); "
          f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
