"""GPU phase check: the tracker's GPU time of phases, its cost and its resolver, against CUDA itself.

    python scripts/gpu_phase_check.py [--out DIR] [--size 4096] [--repeat 20] [--trials 15]

Run on a machine with a CUDA GPU, torch built with CUDA and nvidia-ml-py. Each check prints one line and
lands in ``DIR/gpu_phase_check.json`` (``--out``, else ``$OUT``, else ``./gpu-results``), beside the GPU
model, the driver and the torch version:

- ``phase_gpu_time``: a phase running a known kernel (a ``size``-square fp32 matmul, ``repeat`` times) gets
  the GPU duration that ``torch.cuda.Event.elapsed_time`` gives around the same work in this script's own
  reference loop (interleaved with the phases, so clock changes hit both): medians within 10% + 50 µs;
  the phases' spans carry the same value (``lezea.phase.gpu.duration``) and the summary the same total;
- ``async_wall`` / ``sync_wall``: a phase's wall time is the kernels' launch, far below their GPU time,
  and ``sync=True`` makes it at least the GPU time;
- ``phase_overhead``: enter+exit of an empty phase on the training thread, CUDA initialised, with GPU
  timing on vs ``LEZEA_GPU_TIMING=off`` (median of single calls); ``timing_off`` checks that off means off;
- ``resolver_lag``: from the GPU finishing a phase's work (or, on an idle GPU, from the phase's exit) to
  its record being handed on to be written;
- ``process_memory``: the per-process GPU memory the observers export for a child process that allocates
  known amounts, vs that process's ``torch.cuda.memory_reserved`` (scripts/gpu_check.py compares the
  device-level NVML readings with nvidia-smi; it is run too, as ``nvml_vs_nvidia_smi``, unless
  ``--no-gpu-check``).

Exit code 0 when no check fails (a SKIP says why), 1 otherwise, 2 (one line, "no CUDA device: ...") where
there is no CUDA device to check.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = "gpu_phase_check.json"
MIB = 1 << 20


# --- verdicts (pure: tested on given numbers) -----------------------------------------------------

@dataclass
class Check:
    """One check's verdict (PASS, FAIL or SKIP), its line for the summary, and its numbers."""

    name: str
    verdict: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def relative_difference(measured: float, reference: float) -> float:
    return (measured - reference) / reference if reference else float("inf")


def agreement(name: str, measured_s: float, reference_s: float, rel: float = 0.10,
              abs_s: float = 50e-6) -> Check:
    """PASS when ``measured_s`` is within ``rel`` of ``reference_s`` plus ``abs_s`` (event resolution and
    the launch of the events themselves)."""
    difference = relative_difference(measured_s, reference_s)
    passed = abs(measured_s - reference_s) <= rel * reference_s + abs_s
    return Check(name, "PASS" if passed else "FAIL",
                 f"tracker {measured_s * 1e3:.3f} ms vs cuda.Event.elapsed_time {reference_s * 1e3:.3f} ms "
                 f"({difference:+.2%}; tolerance {rel:.0%} + {abs_s * 1e6:.0f} µs)",
                 {"tracker_s": measured_s, "reference_s": reference_s, "relative_difference": difference,
                  "rel_tolerance": rel, "abs_tolerance_s": abs_s})


def async_wall(walls_s: Sequence[float], gpus_s: Sequence[float], most: float = 0.5) -> Check:
    """An asynchronous phase ends once its kernels are launched: its median wall time is at most ``most``
    of its median GPU time."""
    wall, gpu = statistics.median(walls_s), statistics.median(gpus_s)
    return Check("async_wall", "PASS" if wall <= most * gpu else "FAIL",
                 f"wall {wall * 1e3:.3f} ms vs GPU {gpu * 1e3:.3f} ms (wall must be <= {most:g}x GPU: "
                 "the phase only launched its kernels)", {"wall_median_s": wall, "gpu_median_s": gpu})


def sync_wall(walls_s: Sequence[float], gpus_s: Sequence[float], rel: float = 0.01,
              abs_s: float = 50e-6) -> Check:
    """``sync=True``: each phase's wall time is at least its GPU time (less the few µs between an event's
    record and the clock reading beside it)."""
    if not walls_s:
        return Check("sync_wall", "FAIL", "no sync phase was recorded")
    shortfall = [gpu - wall for wall, gpu in zip(walls_s, gpus_s, strict=True)]
    short = [s for s, gpu in zip(shortfall, gpus_s, strict=True) if s > rel * gpu + abs_s]
    worst = max(shortfall)
    return Check("sync_wall", "FAIL" if short else "PASS",
                 f"{len(walls_s) - len(short)} of {len(walls_s)} sync phases last at least their GPU time "
                 f"(worst GPU - wall {worst * 1e6:+.0f} µs; tolerance {rel:.0%} + {abs_s * 1e6:.0f} µs)",
                 {"wall_median_s": statistics.median(walls_s), "gpu_median_s": statistics.median(gpus_s),
                  "worst_gpu_minus_wall_s": worst, "short": len(short)})


def overhead(on_us: Sequence[float], off_us: Sequence[float], budget_us: float) -> Check:
    """The GPU timing's added cost per phase: median single enter+exit, on minus off, within budget."""
    on, off = statistics.median(on_us), statistics.median(off_us)
    added = on - off
    return Check("phase_overhead", "PASS" if added <= budget_us else "FAIL",
                 f"empty phase enter+exit: {on:.2f} µs with GPU timing vs {off:.2f} µs with "
                 f"LEZEA_GPU_TIMING=off (+{added:.2f} µs; budget {budget_us:g} µs); p99 "
                 f"{quantile(on_us, 0.99):.1f} vs {quantile(off_us, 0.99):.1f} µs",
                 {"on_median_us": on, "off_median_us": off, "added_us": added, "budget_us": budget_us,
                  "on_p99_us": quantile(on_us, 0.99), "off_p99_us": quantile(off_us, 0.99),
                  "calls": len(on_us)})


def lag(busy_s: Sequence[float], idle_s: Sequence[float], budget_s: float) -> Check:
    """The resolver's latency: medians within ``budget_s`` (a phase's record, not the training step)."""
    if not busy_s or not idle_s:
        return Check("resolver_lag", "SKIP", "the resolver's counters were not found: lag not measured")
    numbers = {f"{what}_{q}_s": quantile(values, p) for what, values in (("busy", busy_s), ("idle", idle_s))
               for q, p in (("p50", 0.5), ("p99", 0.99))}
    numbers["budget_s"] = budget_s
    passed = numbers["busy_p50_s"] <= budget_s and numbers["idle_p50_s"] <= budget_s
    return Check("resolver_lag", "PASS" if passed else "FAIL",
                 f"GPU done -> record handed on: p50 {numbers['busy_p50_s'] * 1e6:.0f} µs, p99 "
                 f"{numbers['busy_p99_s'] * 1e6:.0f} µs; idle GPU, phase exit -> record: p50 "
                 f"{numbers['idle_p50_s'] * 1e6:.0f} µs, p99 {numbers['idle_p99_s'] * 1e6:.0f} µs "
                 f"(budget p50 {budget_s * 1e3:g} ms)", numbers)


def process_memory(observed: Sequence[int | None], reserved: Sequence[int], rel: float = 0.02,
                   abs_bytes: int = 32 * MIB, context_bytes: int = 2048 * MIB) -> Check:
    """The exported per-process GPU memory at each allocation level vs the process's own
    ``memory_reserved``: each step's growth within ``rel`` + ``abs_bytes`` of the allocator's, and the
    level at least the reserved memory, by no more than a CUDA context (``context_bytes``)."""
    if any(value is None for value in observed):
        return Check("process_memory", "FAIL", "the observers exported no GPU memory for the allocating "
                     f"process at some level ({list(observed)}): NVML lists it under another pid (a "
                     "container's PID namespace?) or not at all", {"observed": list(observed),
                                                                    "reserved": list(reserved)})
    levels = [int(value or 0) for value in observed]
    growth = [(b - a, r1 - r0) for a, b, r0, r1 in zip(levels, levels[1:], reserved, reserved[1:],
                                                         strict=False)]
    bad_growth = [g for g in growth if abs(g[0] - g[1]) > rel * g[1] + abs_bytes]
    context = [level - r for level, r in zip(levels, reserved, strict=True)]
    bad_level = [c for c in context if not 0 <= c <= context_bytes]
    passed = not bad_growth and not bad_level
    steps = ", ".join(f"+{g[0] / MIB:.0f} MiB (torch +{g[1] / MIB:.0f})" for g in growth)
    return Check("process_memory", "PASS" if passed else "FAIL",
                 f"exported process GPU memory grew {steps}; above memory_reserved by "
                 f"{min(context) / MIB:.0f}-{max(context) / MIB:.0f} MiB (the CUDA context; at most "
                 f"{context_bytes / MIB:.0f})", {"observed": levels, "reserved": list(reserved)})


def exit_code(checks: Sequence[Check]) -> int:
    """0 when there are checks and none failed; SKIPs say why and do not fail."""
    return 0 if checks and all(check.verdict != "FAIL" for check in checks) else 1


def summary_text(results: dict[str, Any]) -> str:
    environment = results.get("environment", {})
    lines = ["GPU phase check: " + ", ".join(f"{key} {value}" for key, value in environment.items())]
    lines += [f"{check['verdict']:4}  {check['name']}: {check['summary']}" for check in results["checks"]]
    failed = [check["name"] for check in results["checks"] if check["verdict"] == "FAIL"]
    lines.append(f"GPU phase check {'FAILED: ' + ', '.join(failed) if failed else 'passed'}")
    return "\n".join(lines)


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    """The results as JSON (and the summary beside it, as text); returns the JSON file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    path.with_suffix(".txt").write_text(summary_text(results) + "\n")
    return path


def no_cuda_reason() -> str | None:
    """Why this machine cannot run the checks, or None: torch missing, or built or running without CUDA."""
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any import failure means the same here
        return f"torch cannot be imported ({type(error).__name__}: {error})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA initialization: Found no NVIDIA driver": said below
        available = torch.cuda.is_available()
    if available:
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU or driver"


# --- reading a run --------------------------------------------------------------------------------

def phase_records(audit: Path, name: str) -> list[dict[str, Any]]:
    """The ``data`` and ``span_id`` of each ``phase`` record named ``name`` in an audit file."""
    with audit.open() as lines:
        return [{**record["data"], "span_id": record.get("span_id")} for record in map(json.loads, lines)
                if record.get("kind") == "phase" and record["data"].get("name") == name]


def span_gpu_durations(spans_jsonl: Path, name: str, attribute: str) -> dict[str, float | None]:
    """Span id -> ``attribute`` (None where absent) of the spans named ``name`` in an OTLP-JSON file."""
    found: dict[str, float | None] = {}
    with spans_jsonl.open() as lines:
        for line in lines:
            for resource in json.loads(line).get("resourceSpans", []):
                for scope in resource.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        if span.get("name") == name:
                            values = {a["key"]: a["value"] for a in span.get("attributes", [])}
                            value = values.get(attribute, {}).get("doubleValue")
                            found[span["spanId"]] = None if value is None else float(value)
    return found


# --- measuring --------------------------------------------------------------------------------------

@dataclass
class Gpu:
    """What the timing checks need of CUDA: ``torch.cuda`` (or the tests' double), a device-wide wait,
    and ``work``: the known kernel, launched (not waited for)."""

    cuda: Any
    synchronize: Callable[[], None]
    work: Callable[[], None]


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """``LEZEA_*`` settings for the trackers made in the block (settings are read at construction)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def new_tracker(runs: Path, name: str, timing: str = "phases") -> Any:
    from lezea_otel import ExperimentTracker

    with environment(LEZEA_GPU_TIMING=timing, LEZEA_GPU_SYNC="false"):
        tracker = ExperimentTracker(name, runs_dir=runs, quiet=True)
    tracker.start(prometheus_port=None)
    return tracker


def resolver_of(tracker: Any) -> Any:
    """The tracker's GPU resolver (internal, looked up defensively), or None."""
    probes = getattr(getattr(tracker, "_session", None), "probes", None)
    resolver = getattr(probes, "resolver", None)
    return resolver if hasattr(resolver, "resolved") and hasattr(resolver, "unresolved") else None


def wait_resolved(resolver: Any, count: int, timeout_s: float = 10.0) -> bool:
    """Until the resolver has handed on ``count`` phases in all (polling; the GIL goes at each poll)."""
    end = time.perf_counter() + timeout_s
    while resolver.resolved + resolver.unresolved < count:
        if time.perf_counter() > end:
            return False
        time.sleep(0)
    return True


def check_kernel(gpu: Gpu, runs: Path, trials: int) -> list[Check]:
    """(a) and (b): phases around the known work vs CUDA events around the same work, interleaved."""
    from lezea_otel import semconv

    tracker = new_tracker(runs, "gpu-phase-kernel")
    reference: list[float] = []
    for _ in range(trials + 1):  # the first trial warms up (clocks, cuBLAS heuristics) and is dropped
        gpu.synchronize()
        start, stop = gpu.cuda.Event(enable_timing=True), gpu.cuda.Event(enable_timing=True)
        start.record()
        gpu.work()
        stop.record()
        stop.synchronize()
        reference.append(start.elapsed_time(stop) / 1000.0)
        gpu.synchronize()
        with tracker.span("matmul"):
            gpu.work()
        gpu.synchronize()
        with tracker.span("matmul_sync", sync=True):
            gpu.work()
    summary = tracker.finalize_experiment() or {}
    phases = phase_records(tracker.audit_path, "matmul")[1:]
    synced = phase_records(tracker.audit_path, "matmul_sync")[1:]
    reference = reference[1:]
    missing = [r for r in phases + synced if "gpu_duration_s" not in r]
    if missing or len(phases) != trials or len(synced) != trials:
        return [Check("phase_gpu_time", "FAIL", f"{len(missing)} of {len(phases) + len(synced)} phase "
                      f"records lack gpu_duration_s (expected {2 * trials})", {"records": phases + synced})]
    gpu_s = [r["gpu_duration_s"] for r in phases]
    checks = [agreement("phase_gpu_time", statistics.median(gpu_s), statistics.median(reference)),
              agreement("sync_phase_gpu_time", statistics.median(r["gpu_duration_s"] for r in synced),
                        statistics.median(reference))]
    checks[0].numbers["per_trial"] = [{"tracker_s": g, "reference_s": r} for g, r in
                                      zip(gpu_s, reference, strict=True)]
    total = (summary.get("phases", {}).get("matmul") or {}).get("gpu_total_s")
    recorded = sum(r["gpu_duration_s"] for r in phase_records(tracker.audit_path, "matmul"))
    agrees = total is not None and abs(total - recorded) <= 1e-9 * max(1.0, recorded)
    checks.append(Check("summary_gpu_total", "PASS" if agrees else "FAIL",
                        f"summary phases.matmul.gpu_total_s {total} vs the records' sum {recorded:.6f}",
                        {"summary_s": total, "records_s": recorded}))
    spans_file = tracker.run_dir / "otlp" / "spans.jsonl"
    if spans_file.exists():
        spans = span_gpu_durations(spans_file, "matmul", semconv.PHASE_GPU_DURATION)
        wrong = [r for r in phases if spans.get(r["span_id"]) != r["gpu_duration_s"]]
        checks.append(Check("span_attribute", "FAIL" if wrong else "PASS",
                            f"{len(phases) - len(wrong)} of {len(phases)} 'matmul' spans carry "
                            f"{semconv.PHASE_GPU_DURATION} equal to the record's gpu_duration_s"))
    else:
        checks.append(Check("span_attribute", "SKIP", f"no {spans_file}: no local spans in this mode"))
    checks.append(async_wall([r["duration_s"] for r in phases], gpu_s))
    checks.append(sync_wall([r["duration_s"] for r in synced], [r["gpu_duration_s"] for r in synced]))
    return checks


def check_overhead(gpu: Gpu, runs: Path, calls: int, blocks: int, budget_us: float) -> list[Check]:
    """(c) the cost of an empty phase on the training thread with GPU timing on vs off, interleaved blocks;
    after each block its resolver work is finished outside the timing, so no block pays for another's."""
    on, off = new_tracker(runs, "gpu-phase-on"), new_tracker(runs, "gpu-phase-off", timing="off")
    timings: dict[str, list[float]] = {"on": [], "off": []}
    resolver = resolver_of(on)
    clock = time.perf_counter_ns
    done = 0
    for block in range(blocks + 1):  # block 0 warms up
        for label in ("on", "off") if block % 2 else ("off", "on"):
            tracker = on if label == "on" else off
            kept = timings[label]
            for _ in range(calls // blocks):
                began = clock()
                with tracker.span("empty"):
                    pass
                elapsed = clock() - began
                if block:
                    kept.append(elapsed / 1000)
            if label == "on":
                done += calls // blocks
                gpu.synchronize()
                if resolver is not None:
                    wait_resolved(resolver, done)
    on.finalize_experiment()
    off.finalize_experiment()
    timed = phase_records(on.audit_path, "empty")
    untimed = phase_records(off.audit_path, "empty")
    with_gpu = sum("gpu_duration_s" in r for r in timed)
    leaked = sum("gpu_duration_s" in r or "gpu_unresolved" in r for r in untimed)
    return [overhead(timings["on"], timings["off"], budget_us),
            Check("timing_off", "PASS" if with_gpu == len(timed) and not leaked else "FAIL",
                  f"GPU time on {with_gpu} of {len(timed)} phases with timing on, on {leaked} of "
                  f"{len(untimed)} with LEZEA_GPU_TIMING=off")]


def check_lag(gpu: Gpu, runs: Path, count: int, budget_s: float) -> Check:
    """(c) the resolver's lag: GPU done -> record handed on (busy), and phase exit -> record on an idle
    GPU, where the resolver has gone to sleep and is woken by the phase."""
    tracker = new_tracker(runs, "gpu-phase-lag")
    resolver = resolver_of(tracker)
    busy: list[float] = []
    idle: list[float] = []
    for i in range(2 * count if resolver is not None else 0):
        kernel = i % 2 == 0
        gpu.synchronize()
        time.sleep(0.002)  # let the resolver go idle: its wake-up is part of what is measured
        with tracker.span("lag"):
            if kernel:
                gpu.work()
        since = time.perf_counter()  # idle GPU: the phase's exit
        if kernel:
            marker = gpu.cuda.Event()
            marker.record()
            marker.synchronize()
            since = time.perf_counter()  # busy: the GPU has just finished the phase's work
        if not wait_resolved(resolver, i + 1):
            break
        (busy if kernel else idle).append(time.perf_counter() - since)
    tracker.finalize_experiment()
    return lag(busy, idle, budget_s)


CHILD = """
import json, sys, torch
held = [torch.zeros(1, device="cuda")]
torch.cuda.synchronize()
def report():
    print(json.dumps({"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}),
          flush=True)
report()
for line in sys.stdin:
    held.append(torch.empty(int(line) << 20, dtype=torch.uint8, device="cuda"))
    torch.cuda.synchronize()
    report()
"""


def check_process_memory(steps_mib: Sequence[int]) -> Check:
    """(d) a child process allocates known amounts; the observers (NVML per-process memory, what the
    exporter exports as ``lezea.process.gpu.memory.usage``) sample it at each level."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from lezea_otel import semconv
    from lezea_otel.exporter.observers import Observers

    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdin is not None and child.stdout is not None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    observers = Observers(provider.get_meter("gpu_phase_check"), {}, 3600.0, "all",
                          lambda call, problem, detail: print(f"warning: {problem}: {detail}"), print,
                          pid=child.pid)
    observed: list[int | None] = []
    reserved: list[int] = []
    try:
        for amount in [0, *steps_mib]:
            if amount:
                child.stdin.write(f"{amount}\n")
                child.stdin.flush()
            reserved.append(json.loads(child.stdout.readline())["reserved"])
            observers.sample()
            data = reader.get_metrics_data()
            values = [getattr(point, "value", 0) for rm in (data.resource_metrics if data else [])
                      for sm in rm.scope_metrics for metric in sm.metrics
                      if metric.name == semconv.PROCESS_GPU_MEMORY
                      for point in metric.data.data_points
                      if (point.attributes or {}).get("process.pid") == child.pid]
            observed.append(int(sum(values)) if values else None)  # summed over the GPUs it uses
    finally:
        child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        observers.stop()
        provider.shutdown()
    return process_memory(observed, reserved)


def check_nvml(seconds: float) -> Check:
    """scripts/gpu_check.py: the device-level NVML readings vs nvidia-smi, in its own process."""
    script = REPO / "scripts" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--seconds", f"{seconds:g}"], capture_output=True,
                          text=True, timeout=120)
    output = done.stdout + done.stderr
    last = output.strip().splitlines()[-1] if output.strip() else "(no output)"
    return Check("nvml_vs_nvidia_smi", "PASS" if done.returncode == 0 else "FAIL",
                 f"scripts/gpu_check.py exit {done.returncode}: {last}", {"output": output[-20000:]})


def describe(torch: Any) -> dict[str, Any]:
    """GPU model, driver, CUDA and torch versions (NVML first, nvidia-smi where NVML is missing)."""
    from lezea_otel.version import __version__

    found: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                             "torch_cuda": torch.version.cuda, "python": platform.python_version(),
                             "lezea_otel": __version__}
    try:
        import pynvml  # type: ignore[import-untyped, unused-ignore]

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        found["driver"] = driver.decode() if isinstance(driver, bytes) else driver
        found["nvml_gpus"] = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as error:  # noqa: BLE001 - nvidia-smi below, and said
        found["nvml"] = f"{type(error).__name__}: {error}"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                              "--format=csv,noheader"], capture_output=True, text=True,
                                             check=True).stdout.strip()
    return found


def importable() -> None:
    """Run from a checkout where lezea_otel is not installed: the repository's copy, here and in the
    processes this one starts (the tracker's exporter, scripts/gpu_check.py)."""
    if importlib.util.find_spec("lezea_otel") is None:
        sys.path.insert(0, str(REPO))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))


def guarded(name: str, run: Callable[[], Check | list[Check]]) -> list[Check]:
    """One check's run; one that raises is a FAIL with its error, and the others still run."""
    try:
        result = run()
    except Exception as error:  # noqa: BLE001 - reported, never hidden
        return [Check(name, "FAIL", f"raised {type(error).__name__}: {error}",
                      {"traceback": traceback.format_exc()})]
    return result if isinstance(result, list) else [result]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-results"))
    parser.add_argument("--size", type=int, default=4096, help="the matmul's side (fp32)")
    parser.add_argument("--repeat", type=int, default=20, help="matmuls per phase")
    parser.add_argument("--trials", type=int, default=15, help="phases (and reference loops) compared")
    parser.add_argument("--calls", type=int, default=20_000, help="empty phases timed per setting")
    parser.add_argument("--overhead-budget-us", type=float, default=25.0)
    parser.add_argument("--lag-budget-ms", type=float, default=5.0)
    parser.add_argument("--memory-steps-mib", default="1024,2048", help="the child's allocations, MiB")
    parser.add_argument("--no-gpu-check", action="store_true", help="skip scripts/gpu_check.py")
    args = parser.parse_args(argv)
    reason = no_cuda_reason()
    if reason is not None:
        print(f"no CUDA device: {reason}", file=sys.stderr)
        return 2
    import torch

    importable()
    os.environ.setdefault("LEZEA_QUIET", "1")
    a = torch.randn(args.size, args.size, device="cuda")
    b = torch.randn(args.size, args.size, device="cuda")
    c = torch.empty_like(a)

    def work() -> None:
        for _ in range(args.repeat):
            torch.mm(a, b, out=c)

    gpu = Gpu(torch.cuda, torch.cuda.synchronize, work)
    results: dict[str, Any] = {"environment": describe(torch),
                               "arguments": vars(args) | {"out": str(args.out)}}
    checks: list[Check] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        if not args.no_gpu_check:
            checks += guarded("nvml_vs_nvidia_smi", lambda: check_nvml(5.0))
        checks += guarded("phase_gpu_time", lambda: check_kernel(gpu, runs, args.trials))
        checks += guarded("phase_overhead", lambda: check_overhead(gpu, runs, args.calls, 10,
                                                                   args.overhead_budget_us))
        checks += guarded("resolver_lag", lambda: check_lag(gpu, runs, 100, args.lag_budget_ms / 1000))
        steps = [int(step) for step in args.memory_steps_mib.split(",") if step.strip()]
        checks += guarded("process_memory", lambda: check_process_memory(steps))
    results["checks"] = [asdict(check) for check in checks]
    results["seconds"] = time.monotonic() - began
    path = write_results(args.out, results)
    print(summary_text(results))
    print(f"results: {path}")
    return exit_code(checks)


if __name__ == "__main__":
    sys.exit(main())
