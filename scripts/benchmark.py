"""Per-call cost of the tracker next to the raw OpenTelemetry SDK doing the same work, in one run.

    .venv/bin/python scripts/benchmark.py [--steps 20000]

Not a test: numbers depend on the machine; the ratios are what README reports and what the
issues' targets are about. Every case writes real files into a temporary runs folder.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from lezea_otel import ExperimentTracker

BATCH = 500


def per_call_us(call, steps: int) -> dict[str, float]:
    """Median and p90 over batches of BATCH calls, in microseconds per call."""
    samples = []
    done = 0
    gc.collect()
    while done < steps:
        start = time.perf_counter_ns()
        for i in range(done, done + BATCH):
            call(i)
        samples.append((time.perf_counter_ns() - start) / BATCH / 1000)
        done += BATCH
    samples.sort()
    return {"median": statistics.median(samples), "p90": samples[int(len(samples) * 0.9)]}


def single_calls_us(call, steps: int) -> dict[str, float]:
    """Each call timed on its own: what the training thread waits, p50 and p99."""
    timings = []
    for i in range(steps):
        start = time.perf_counter_ns()
        call(i)
        timings.append((time.perf_counter_ns() - start) / 1000)
    timings.sort()
    return {"p50": timings[len(timings) // 2], "p99": timings[int(len(timings) * 0.99)]}


def raw_sdk(runs: Path):
    """The floor of DESIGN.md: synchronous gauges + one JSON audit line, file exporters attached."""
    runs.mkdir(parents=True, exist_ok=True)
    reader = PeriodicExportingMetricReader(FileMetricExporter(runs / "metrics.jsonl"), export_interval_millis=15000)
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    meter = meters.get_meter("raw")
    gauges = [meter.create_gauge(f"raw.{k}") for k in ("loss", "acc", "lr", "grad_norm")]
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(FileSpanExporter(runs / "spans.jsonl")))
    tracer = tracer_provider.get_tracer("raw")
    audit = open(runs / "events.jsonl", "a", buffering=1 << 16)  # noqa: SIM115
    attributes = {"lezea.experiment.id": "x", "lezea.data_split": "train"}

    def step(i: int) -> None:
        values = {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 3e-4, "grad_norm": 1.0}
        for gauge, value in zip(gauges, values.values()):
            gauge.set(value, attributes)
        audit.write(json.dumps({"seq": i, "time": time.time_ns(), "kind": "training_step", "step": i,
                                "data": {"metrics": values}}) + "\n")

    def scope(i: int) -> None:
        with tracer.start_as_current_span("builder", attributes={"lezea.scope.id": "42"}):
            pass

    def close() -> None:
        audit.close()
        tracer_provider.shutdown()
        meters.shutdown()

    return step, scope, close


def tracker_calls(runs: Path, async_mode: bool = False):
    tracker = ExperimentTracker("bench", runs_dir=runs, quiet=True, async_mode=async_mode)
    tracker.start(prometheus_port=None)
    steps = itertools.count(1)  # rounds repeat i; the tracker rightly warns about repeated steps

    def step(i: int) -> None:
        tracker.log_training_step(next(steps), {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 3e-4, "grad_norm": 1.0},
                                  data_split="train")

    def scope(i: int) -> None:
        with tracker.builder_scope("42"):
            pass

    def phase(i: int) -> None:
        with tracker.span("forward"):
            pass

    return tracker, step, scope, phase


def observer_costs(runs: Path, steps: int) -> dict[str, dict[str, float]]:
    """One collection cycle over a tree of 8 processes, and scope enter/exit with summaries on and off."""
    import subprocess
    import sys

    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(7)]
    try:
        tracker = ExperimentTracker("observers", runs_dir=runs, quiet=True)
        tracker.start(prometheus_port=None)
        observers = tracker._observers
        out = {"observer collection cycle (8 processes, no GPU)": per_call_us(lambda i: observers.sample(), 200)}
        out["builder_scope enter/exit, resource summary on"] = per_call_us(
            lambda i: tracker.builder_scope("1").__enter__().__exit__(None, None, None), steps // 4)
        out["layer_scope enter/exit, summary off (default)"] = per_call_us(
            lambda i: tracker.layer_scope("1").__enter__().__exit__(None, None, None), steps // 4)
        out["observers scope_enter + scope_exit alone"] = per_call_us(
            lambda i: observers.scope_exit(observers.scope_enter()), steps)
        tracker.finalize_experiment()
    finally:
        for child in children:
            child.kill()
            child.wait()
    return out


def memory_per_step(runs: Path, steps: int) -> float:
    tracker, step, _, _ = tracker_calls(runs)
    for i in range(1000):
        step(i)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(1000, 1000 + steps):
        step(i)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    tracker.finalize_experiment()
    return growth / steps


def delivery_costs(root: Path, steps: int) -> dict[str, float]:
    """Issue 4's delivery targets: a step with the collector down costs what it costs with it up;
    finalize is bounded whatever the collector does; how fast the async worker drains."""
    import socket
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.otlp_receiver import HttpReceiver

    os.environ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "1000"  # milliseconds, as the OTel specification says
    out: dict[str, float] = {}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    up, slow = HttpReceiver(), HttpReceiver()
    slow.delay_s = 10.0
    try:
        for name, endpoint in (("up", up.endpoint), ("down", closed), ("slow (10 s)", slow.endpoint)):
            tracker = ExperimentTracker("delivery", runs_dir=root / name, endpoint=endpoint, quiet=True)
            tracker.start(prometheus_port=None)
            counter = itertools.count(1)

            def step(i: int, tracker: ExperimentTracker = tracker, counter=counter) -> None:
                with tracker.span("step"):
                    tracker.log_training_step(next(counter), {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 3e-4,
                                                              "grad_norm": 1.0})

            if name != "slow (10 s)":
                out[f"step (span + 4 metrics), collector {name}"] = per_call_us(step, steps)["median"]
            else:
                for i in range(steps // 10):
                    step(i)
            began = time.perf_counter()
            tracker.finalize_experiment()
            out[f"finalize, collector {name} (s)"] = time.perf_counter() - began
    finally:
        up.stop()
        slow.stop()
    tracker = ExperimentTracker("throughput", runs_dir=root / "async", quiet=True, async_mode=True)
    tracker.start(prometheus_port=None)
    metrics = {"loss": 0.5, "acc": 0.5, "lr": 3e-4, "grad_norm": 1.0}
    count = 100_000
    began = time.perf_counter()
    for i in range(1, count + 1):
        tracker.log_training_step(i, metrics)
    submitted = time.perf_counter()
    tracker._pipeline.flush()
    drained = time.perf_counter()
    out["async: caller submits (steps/s)"] = count / (submitted - began)
    out["async: worker sustains (steps/s)"] = count / (drained - began)
    tracker.finalize_experiment()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    os.environ.setdefault("LEZEA_QUIET", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw_step, raw_scope, raw_close = raw_sdk(root / "raw")
        tracker, step, scope, phase = tracker_calls(root / "runs")
        results = {}
        for _ in range(2):  # interleave, keep the second round (warm caches, same conditions)
            results["raw SDK: 4 gauge.set + json line"] = per_call_us(raw_step, args.steps)
            results["log_training_step, 4 metrics (sync)"] = per_call_us(step, args.steps)
            results["raw SDK: span start/end"] = per_call_us(raw_scope, args.steps // 4)
            results["builder_scope enter/exit"] = per_call_us(scope, args.steps // 4)
            results["tracker.span phase enter/exit"] = per_call_us(phase, args.steps // 4)
        raw_close()
        tracker.finalize_experiment()
        async_tracker, async_step, _, _ = tracker_calls(root / "async", async_mode=True)
        caller = single_calls_us(async_step, args.steps)
        async_tracker.finalize_experiment()
        sync_tracker, sync_step, _, _ = tracker_calls(root / "sync-single")
        sync_caller = single_calls_us(sync_step, args.steps)
        sync_tracker.finalize_experiment()
        bytes_per_step = memory_per_step(root / "memory", args.steps)
        results.update(observer_costs(root / "observers", args.steps))
        delivery = delivery_costs(root / "delivery", args.steps // 4)

    print(f"{'case':45} {'median µs':>10} {'p90 µs':>8}")
    for name, value in results.items():
        print(f"{name:45} {value['median']:10.2f} {value['p90']:8.2f}")
    floor = results["raw SDK: 4 gauge.set + json line"]["median"]
    ours = results["log_training_step, 4 metrics (sync)"]["median"]
    print(f"\nlog_training_step / raw-SDK floor: {ours / floor:.2f}x (target <= 2x)")
    print(f"scope / raw span: {results['builder_scope enter/exit']['median'] / results['raw SDK: span start/end']['median']:.2f}x")
    print(f"single-call latency, sync:  p50 {sync_caller['p50']:.2f} µs, p99 {sync_caller['p99']:.2f} µs")
    print(f"single-call latency, async: p50 {caller['p50']:.2f} µs, p99 {caller['p99']:.2f} µs")
    print(f"memory growth per logged step (tracemalloc, {args.steps} steps): {bytes_per_step:.1f} bytes")
    print()
    for name, value in delivery.items():
        print(f"{name:45} {value:10.2f}")
    down = delivery["step (span + 4 metrics), collector down"]
    print(f"step with collector down / up: {down / delivery['step (span + 4 metrics), collector up']:.2f}x "
          "(target within 10%)")


if __name__ == "__main__":
    main()
