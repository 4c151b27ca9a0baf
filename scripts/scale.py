"""A scale simulation: many short-lived ranks of one experiment, one real OTLP receiver, one machine.

    .venv/bin/python scripts/scale.py                  # 64 ranks (8 simulated nodes x 8), then 1 rank, ~4 min
    .venv/bin/python scripts/scale.py --ranks 16 --steps 50 --compare 0    # a quick look
    .venv/bin/python scripts/scale.py --wave 64        # all 64 at once, on a machine with the cores for it

Every rank is a real process with a torchrun environment (one ``TORCHELASTIC_RUN_ID``, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK = r % 8``, ``LOCAL_WORLD_SIZE = 8``, ``GROUP_RANK = r // 8``) and the tracker in
its default mode: an exporter process per rank, /metrics on 8000 + ``LOCAL_RANK`` or the next free port,
observers on, OTLP/HTTP to the receiver of ``tests/otlp_receiver.py`` running in this process (kept-alive
HTTP/1.1 connections, as a collector's). Ranks run in waves of ``--wave`` (whole simulated nodes): a wave
starts, each of its ranks waits until its exporter has committed the start records, then they train
together (a barrier, as ``init_process_group`` is) and end; then the next wave. One exporter costs a few
percent of a core while its rank trains, so 64 at once would saturate 2 cores and measure the contention,
not the tracker. A rank's training: a builder scope of ``--steps`` steps of 4 phases (``time.sleep`` stands
in for the work: ``--step-ms`` per step) and a training step of 4 metrics. A rank measures its own tracker
calls (around each phase's enter and exit and each ``log_training_step``, thread CPU and wall time), its
exporter's CPU (``getrusage`` of its reaped children: the exporter process is the one that counts) and peak
RSS (its ``VmHWM``) and writes them as JSON.

The receiver's CPU is this process's CPU minus its main thread's (which only spawns and waits): the HTTP
server's threads, which parse and keep every request. The agent -> gateway figures replay the requests of
each simulated node through the batching of the shipped ``collector/otelcol-agent.yaml`` (read from it,
with the collector's documented defaults for what it leaves out). Not a test: numbers depend on the
machine and its load (the share of the machine's CPUs busy while ranks trained is printed); the series
check is exact and prints PASS or FAIL.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

REPO = Path(__file__).resolve().parent.parent

PHASES = ("data", "forward", "backward", "optimizer")
METRICS = ("loss", "acc", "lr", "grad_norm")
PER_NODE = 8
SIGNALS = ("traces", "metrics", "logs")
ITEMS = {"traces": "spans", "metrics": "data points", "logs": "log records"}
GATEWAY_CORE = {"traces": 15_000.0, "metrics": 20_000.0, "logs": 10_000.0}
"""Items per second one collector core ingests: Splunk's published sizing of its OpenTelemetry Collector
distribution ("Sizing and scaling", help.splunk.com); an assumption here, not measured."""
QUEUE_BATCH_DEFAULTS = {"flush_timeout": "200ms", "min_size": 8192, "max_size": 0}
"""exporterhelper's ``sending_queue::batch`` defaults (collector ``exporter/exporterhelper/README.md``)."""


# --- the rank ---------------------------------------------------------------------------------------------

def reference_work() -> float:
    """A fixed bit of pure-Python work (what a record costs to serialise, about): its wall µs. Timed warm
    and after each step's pauses, it says how much colder calls after a pause are on this machine."""
    began = time.perf_counter()
    for number in range(3):
        json.dumps({"kind": "phase_end", "name": "forward", "at": time.time(), "n": number, "tags": [1, 2]})
    return (time.perf_counter() - began) * 1e6


def threads_cpu_s(pid: int) -> float:
    """CPU seconds of a process's live threads, to the nanosecond (``/proc/<pid>/task/*/schedstat``;
    ``psutil.cpu_times`` counts clock ticks, too coarse for a few idle seconds)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total / 1e9


def peak_rss(pid: int | str) -> int:
    """A process's peak RSS in bytes since its ``exec`` (``VmHWM``). ``getrusage``'s ``ru_maxrss`` would
    not do: it keeps the high-water mark of the forked copy of the parent from before the ``exec``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rank_main(out: Path, steps: int, step_ms: float, metrics_port: bool, idle_s: float) -> None:
    """One rank: start, wait for the barrier, train, finalize; what it measured: ``out/rank-<r>.json``."""
    began_cpu = time.process_time()
    from lezea_otel import ExperimentTracker

    rank = int(os.environ["RANK"])
    tracker = ExperimentTracker("scale", purpose="scale simulation", tags=["scale"])
    tracker.start(prometheus_port=8000 if metrics_port else None)
    children_at_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    exporter = next((child for child in psutil.Process().children()
                     if "lezea_otel.exporter" in " ".join(child.cmdline())), None)
    waited = time.perf_counter()
    ready = False
    while time.perf_counter() - waited < 120 and not ready:  # the exporter committed the start records
        ready = any((tracker.run_dir / "exporter").glob("local-*.json"))
        time.sleep(0.05)
    startup = exporter.cpu_times() if exporter is not None else None
    start_cpu = time.process_time() - began_cpu
    ready_at = time.perf_counter()
    idle_from = threads_cpu_s(exporter.pid) if exporter is not None else 0.0
    time.sleep(idle_s)  # the exporter with nothing to do: what it costs by the second (polls, observers)
    idle_ms_per_s = (1000 * (threads_cpu_s(exporter.pid) - idle_from) / (time.perf_counter() - ready_at)
                     if exporter is not None else None)
    (out / f"ready-{rank}").touch()
    sys.stdin.readline()  # the barrier: every rank is ready

    go = time.time()
    pause = step_ms / 1000 / len(PHASES)
    warm = statistics.median(reference_work() for _ in range(200))
    cold: list[float] = []
    cpu_us: list[float] = []
    wall_us: list[float] = []
    loop_process, loop_thread, loop_wall = time.process_time(), time.thread_time(), time.perf_counter()
    with tracker.builder_scope("epoch-0"):
        for step in range(1, steps + 1):
            cpu = wall = 0.0
            for phase in PHASES:
                c0, w0 = time.thread_time(), time.perf_counter()
                with tracker.span(phase):
                    c1, w1 = time.thread_time(), time.perf_counter()
                    time.sleep(pause)
                    if phase == PHASES[-1]:
                        cold.append(reference_work())
                    c2, w2 = time.thread_time(), time.perf_counter()
                c3, w3 = time.thread_time(), time.perf_counter()
                cpu += (c1 - c0) + (c3 - c2)
                wall += (w1 - w0) + (w3 - w2)
            c0, w0 = time.thread_time(), time.perf_counter()
            tracker.log_training_step(step, dict(zip(METRICS, (1.0 / step, step / (step + 1.0), 0.1,
                                                               1.0 + rank / 100), strict=True)))
            cpu += time.thread_time() - c0
            wall += time.perf_counter() - w0
            cpu_us.append(cpu * 1e6)
            wall_us.append(wall * 1e6)
    loop = {"wall_s": time.perf_counter() - loop_wall, "thread_cpu_s": time.thread_time() - loop_thread,
            "process_cpu_s": time.process_time() - loop_process}
    exporter_peak = peak_rss(exporter.pid) if exporter is not None else 0  # its last flush still to come
    ended = time.perf_counter()
    summary = tracker.finalize_experiment() or {}
    finalize_s = time.perf_counter() - ended
    lifetime_s = time.perf_counter() - ready_at
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    exporter_cpu = (children.ru_utime + children.ru_stime
                    - children_at_start.ru_utime - children_at_start.ru_stime)
    records = len(tracker.audit_path.read_bytes().splitlines())
    result = {
        "rank": rank, "go": go, "end": time.time(), "start_cpu_s": start_cpu,
        "step_cpu_us": cpu_us, "step_wall_us": wall_us, "loop": loop, "finalize_s": finalize_s,
        "reference_us": {"warm": warm, "after_pause": statistics.median(cold)},
        "trainer_peak_rss": peak_rss("self"),
        "exporter": {"found": exporter is not None, "ready": ready, "reaped": not psutil.Process().children(),
                     "startup_cpu_s": startup.user + startup.system if startup else None,
                     "idle_ms_per_s": idle_ms_per_s, "lifetime_s": lifetime_s,
                     "cpu_s": exporter_cpu, "peak_rss": exporter_peak, "records": records},
        "delivery": summary.get("delivery", {}).get("signals", {}),
        "warnings": summary.get("warnings", {}).get("messages", []),
    }
    (out / f"rank-{rank}.json").write_text(json.dumps(result))


# --- the launch -------------------------------------------------------------------------------------------

@dataclass
class Arrival:
    at: float
    signal: str
    size: int
    request: Any


@dataclass
class Timed:
    """What the test receiver records (it only calls ``add``): each request, when it came, its body's size."""

    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, signal: str, request: Any, headers: dict[str, str]) -> None:
        size = int(headers.get("Content-Length") or request.ByteSize())
        with self.lock:
            self.arrivals.append(Arrival(time.time(), signal, size, request))


@dataclass
class Run:
    ranks: int
    results: list[dict[str, Any]]
    arrivals: list[Arrival]
    wall_s: float
    receiver_cpu_s: float
    wave: int
    busy: float
    """The machine's CPUs, busy share while ranks trained (barrier to a wave's end; every process counts)."""


def launch(ranks: int, args: argparse.Namespace) -> Run:
    """``ranks`` rank processes of one launch, ``--wave`` at a time: a wave starts, meets at the barrier,
    trains and ends before the next starts. What came back."""
    work = Path(tempfile.mkdtemp(prefix="lezea-scale-"))
    received = Timed()
    # The tests' receiver, imported by name (the tests are not type-checked) and here only (a rank's memory
    # is then the tracker's).
    sys.path.insert(0, str(REPO))
    # HTTP/1.1: connections kept alive between requests, as a collector's are (HTTP/1.0 would make each
    # export pay a TCP connect, which no collector imposes)
    receiver: Any = importlib.import_module("tests.otlp_receiver").HttpReceiver(received=received,
                                                                                keep_alive=True)
    base = {key: value for key, value in os.environ.items() if not key.startswith(("LEZEA_", "OTEL_"))}
    base.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "LEZEA_QUIET": "1",
                 "LEZEA_SPAN_RANKS": args.span_ranks, "TORCHELASTIC_RUN_ID": f"scale-{uuid.uuid4()}",
                 "TORCHELASTIC_RESTART_COUNT": "0", "WORLD_SIZE": str(ranks),
                 "LOCAL_WORLD_SIZE": str(min(PER_NODE, ranks)),
                 "GROUP_WORLD_SIZE": str(math.ceil(ranks / PER_NODE))})
    command = [sys.executable, str(Path(__file__).resolve()), "--rank-of", str(work),
               "--steps", str(args.steps), "--step-ms", str(args.step_ms), "--idle-s", str(args.idle_s),
               *([] if args.metrics_port else ["--no-metrics-port"])]
    processes: list[subprocess.Popen[bytes]] = []
    busy, trained_s = 0.0, 0.0
    began, began_cpu, began_main = time.perf_counter(), time.process_time(), time.thread_time()
    try:
        for first in range(0, ranks, args.wave):
            wave = range(first, min(ranks, first + args.wave))
            for rank in wave:
                env = {**base, "RANK": str(rank), "ROLE_RANK": str(rank), "LOCAL_RANK": str(rank % PER_NODE),
                       "GROUP_RANK": str(rank // PER_NODE)}
                with open(work / f"rank-{rank}.log", "wb") as log:
                    processes.append(subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.PIPE,
                                                      stdout=log, stderr=subprocess.STDOUT))
            while not all((work / f"ready-{rank}").exists() for rank in wave):
                failed = [rank for rank in wave if processes[rank].poll() is not None]
                if failed:
                    raise RuntimeError(f"rank {failed[0]} ended before training: "
                                       + (work / f"rank-{failed[0]}.log").read_text()[-2000:])
                time.sleep(0.1)
            machine, opened = psutil.cpu_times(), time.perf_counter()
            for rank in wave:  # the barrier opens
                stdin = processes[rank].stdin
                assert stdin is not None
                stdin.write(b"go\n")
                stdin.close()
            for rank in wave:
                if processes[rank].wait(timeout=600) != 0:
                    told = (work / f"rank-{rank}.log").read_text()
                    raise RuntimeError(f"rank {rank} failed: {told[-2000:]}")
            after, took = psutil.cpu_times(), time.perf_counter() - opened
            busy += took * (1 - (after.idle - machine.idle) / (sum(after) - sum(machine)))
            trained_s += took
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        wall = time.perf_counter() - began
        receiver_cpu = (time.process_time() - began_cpu) - (time.thread_time() - began_main)
        receiver.stop()
    results = [json.loads((work / f"rank-{rank}.json").read_text()) for rank in range(ranks)]
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}", file=sys.stderr)
    return Run(ranks, results, received.arrivals, wall, receiver_cpu, min(args.wave, ranks),
               busy / max(trained_s, 1e-9))


# --- what came back ---------------------------------------------------------------------------------------

def _attributes(attributes: Any) -> frozenset[tuple[str, str]]:
    return frozenset((a.key, str(a.value).strip()) for a in attributes)


def _resources(arrival: Arrival) -> list[Any]:
    key = {"traces": "resource_spans", "metrics": "resource_metrics", "logs": "resource_logs"}[arrival.signal]
    return list(getattr(arrival.request, key))


def _rank_of(arrival: Arrival) -> int | None:
    """The ``dl.rank`` of a request's resources (None: none, or several: a request mixes ranks)."""
    found = {a.value.int_value for r in _resources(arrival)
             for a in r.resource.attributes if a.key == "dl.rank"}
    return found.pop() if len(found) == 1 else None


def _items(arrival: Arrival) -> int:
    if arrival.signal == "traces":
        return sum(len(ss.spans) for rs in arrival.request.resource_spans for ss in rs.scope_spans)
    if arrival.signal == "logs":
        return sum(len(sl.log_records) for rl in arrival.request.resource_logs for sl in rl.scope_logs)
    return sum(len(getattr(m, m.WhichOneof("data")).data_points) for rm in arrival.request.resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics)


def series_check(run: Run) -> list[tuple[str, int, int, int, int, bool]]:
    """Per metric name: ``(name, ranks with it, keys, series, ranks x keys, ok)``. A series is a resource
    plus a point's attribute set (what Prometheus makes labels of); a key a point attribute set less its
    ``dl.*`` rank attributes. ``ok``: one resource per rank, every rank of the metric has every key, and
    nothing else."""
    series: dict[str, set[tuple[frozenset[Any], frozenset[Any]]]] = defaultdict(set)
    for arrival in run.arrivals:
        if arrival.signal != "metrics":
            continue
        for rm in arrival.request.resource_metrics:
            resource_key = _attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in getattr(metric, metric.WhichOneof("data")).data_points:
                        series[metric.name].add((resource_key, _attributes(point.attributes)))
    rows = []
    for name, found in sorted(series.items()):
        resources = {resource_key for resource_key, _ in found}
        ranks = {dict(resource_key).get("dl.rank") for resource_key in resources}
        keys = {frozenset(item for item in point_key if not item[0].startswith("dl."))
                for _, point_key in found}
        expected = len(ranks) * len(keys)
        ok = len(resources) == len(ranks) and None not in ranks and len(found) == expected
        rows.append((name, len(ranks), len(keys), len(found), expected, ok))
    return rows


def training(run: Run) -> tuple[list[Arrival], float]:
    """What each rank sent from its barrier to its end (its final flush in), and the rank-minutes that
    took: the window of every rate here (a wave's startup, and the next wave's, left out)."""
    windows = {r["rank"]: (r["go"], r["end"]) for r in run.results}
    arrived = [a for a in run.arrivals if (rank := _rank_of(a)) is not None
               and windows[rank][0] <= a.at <= windows[rank][1]]
    return arrived, sum(end - go for go, end in windows.values()) / 60


def rates(run: Run) -> dict[str, dict[str, float]]:
    """Per signal, per rank-minute of training: requests, bytes, items; ``total_*``: everything a rank sent
    in its life, startup included."""
    arrived, window = training(run)
    out: dict[str, dict[str, float]] = {}
    for signal in SIGNALS:
        mine = [a for a in run.arrivals if a.signal == signal]
        training_ = [a for a in arrived if a.signal == signal]
        out[signal] = {"requests": len(training_) / window, "bytes": sum(a.size for a in training_) / window,
                       "items": sum(_items(a) for a in training_) / window,
                       "total_requests": len(mine) / run.ranks,
                       "total_bytes": sum(a.size for a in mine) / run.ranks,
                       "unattributed": sum(1 for a in mine if _rank_of(a) is None),
                       "resource_share": (sum(r.resource.ByteSize() for a in training_ for r in _resources(a))
                                          / max(1, sum(a.size for a in training_)))}
    return out


def agent_config() -> dict[str, Any]:
    """The batching and compression of the shipped agent's exporter to the gateway (defaults filled in)."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    config = yaml.safe_load((REPO / "collector" / "otelcol-agent.yaml").read_text())
    name, exporter = next((n, e) for n, e in config["exporters"].items()
                          if "GATEWAY" in str(e.get("endpoint")))
    queue = exporter.get("sending_queue") or {}
    processors = [p for p in config["service"]["pipelines"]["traces"]["processors"] if p.startswith("batch")]
    if processors:  # a batch processor: its timeout and send_batch_size
        given = config["processors"].get(processors[0]) or {}
        batch = {"flush_timeout": given.get("timeout", "200ms"),
                 "min_size": given.get("send_batch_size", 8192),
                 "max_size": given.get("send_batch_max_size", 0), "sizer": "items", "where": processors[0]}
    elif queue.get("batch") is not None:
        batch = {**QUEUE_BATCH_DEFAULTS, **queue["batch"], "where": f"{name}.sending_queue.batch"}
        batch.setdefault("sizer", queue.get("sizer", "items"))
    else:
        batch = {"flush_timeout": "0ms", "min_size": 0, "max_size": 0, "sizer": "requests", "where": "none"}
    text = str(batch["flush_timeout"])
    seconds = float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))
    compression = exporter.get("compression", "gzip" if name.startswith("otlp") else "none")
    return {**batch, "flush_timeout_s": seconds, "compression": compression, "exporter": name}


def replay_agents(run: Run, agent: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each simulated node's requests of the training window through its agent's batcher (a batch opens with
    its first request and goes after ``flush_timeout`` or at ``min_size`` items): batches and bytes per
    node per minute."""
    arrived, window = training(run)
    nodes = max(1, math.ceil(run.ranks / PER_NODE))
    window = window / min(PER_NODE, run.ranks)  # node-minutes: a node's ranks train at once
    out: dict[str, dict[str, float]] = {}
    for signal in SIGNALS:
        batches, raw, packed = 0, 0, 0
        for node in range(nodes):
            mine = sorted((a for a in arrived if a.signal == signal
                           and (_rank_of(a) or 0) // PER_NODE == node), key=lambda a: a.at)
            current: list[Arrival] = []
            for arrival in [*mine, None]:
                late = arrival is None or (current and arrival.at > current[0].at + agent["flush_timeout_s"])
                full = agent["min_size"] and sum(_items(a) for a in current) >= agent["min_size"]
                if current and (late or full):
                    body = b"".join(a.request.SerializeToString() for a in current)
                    batches, raw = batches + 1, raw + len(body)
                    packed += len(gzip.compress(body)) if agent["compression"] == "gzip" else len(body)
                    current = []
                if arrival is not None:
                    current.append(arrival)
        out[signal] = {"batches": batches / window, "bytes": raw / window, "wire_bytes": packed / window}
    return out


# --- the report -------------------------------------------------------------------------------------------

def _q(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f}"


def figures(run: Run) -> dict[str, str]:
    """One column of the main table."""
    steps = [v for r in run.results for v in r["step_cpu_us"]]
    walls = [v for r in run.results for v in r["step_wall_us"]]
    exporters = [r["exporter"] for r in run.results]
    startup = [e["startup_cpu_s"] or 0.0 for e in exporters]
    per_1000 = [1000 * (e["cpu_s"] - (e["startup_cpu_s"] or 0.0)) / e["records"] for e in exporters]
    idle = [e["idle_ms_per_s"] or 0.0 for e in exporters]
    busy = [(e["cpu_s"] - (e["startup_cpu_s"] or 0.0)) / e["lifetime_s"] * 1000 for e in exporters]
    net = [1000 * (e["cpu_s"] - (e["startup_cpu_s"] or 0.0)
                   - (e["idle_ms_per_s"] or 0.0) * e["lifetime_s"] / 1000)
           / e["records"] for e in exporters]
    background = [1000 * (r["loop"]["process_cpu_s"] - r["loop"]["thread_cpu_s"]) / r["loop"]["wall_s"]
                  for r in run.results]
    counted = ("traces", "logs")  # a rank's summary counts metric records, the receiver data points
    exported = {s: sum(r["delivery"].get(s, {}).get("exported", 0) for r in run.results) for s in counted}
    got = {s: sum(_items(a) for a in run.arrivals if a.signal == s) for s in counted}
    rate = rates(run)
    requests = sum(1 for _ in run.arrivals)
    experiments = {a.value.string_value for arrival in run.arrivals for r in _resources(arrival)
                   for a in r.resource.attributes if a.key == "lezea.experiment.id"}
    traces = {span.trace_id for arrival in run.arrivals if arrival.signal == "traces"
              for rs in arrival.request.resource_spans for ss in rs.scope_spans for span in ss.spans}
    checked = series_check(run)
    column = {
        "series per metric = ranks x keys": ("PASS" if all(row[-1] for row in checked) else "FAIL")
        + f" ({len(checked)} metrics, {sum(row[3] for row in checked)} series)",
        "spans, log records exported (rank summaries) = received": (
            "yes" if exported == got else f"no: {exported} vs {got}"),
        "requests without one dl.rank": str(sum(int(rate[s]["unattributed"]) for s in SIGNALS)),
        "experiment ids / trace ids at the receiver": f"{len(experiments)} / {len(traces)}",
        "exporters found / ready / reaped": " / ".join(
            str(sum(bool(e[key]) for e in exporters)) for key in ("found", "ready", "reaped")),
    }
    for signal in SIGNALS:
        column[f"{signal}: requests / rank / min"] = f"{rate[signal]['requests']:.1f}"
        column[f"{signal}: KiB / rank / min"] = _kib(rate[signal]["bytes"])
        column[f"{signal}: {ITEMS[signal]} / rank / min"] = f"{rate[signal]['items']:,.0f}"
        column[f"{signal}: share of bytes that is the resource, repeated per request"] = (
            f"{100 * rate[signal]['resource_share']:.0f} %")
        column[f"{signal}: per rank in all (requests, KiB)"] = (
            f"{rate[signal]['total_requests']:.1f}, {_kib(rate[signal]['total_bytes'])}")
    column.update({
        "receiver CPU s (per request ms)": (
            f"{run.receiver_cpu_s:.2f} ({1000 * run.receiver_cpu_s / requests:.2f})"),
        "receiver CPU, % of one core over the run": f"{100 * run.receiver_cpu_s / run.wall_s:.1f}",
        "tracker per step, CPU µs: median (p95)": f"{statistics.median(steps):.0f} ({_q(steps, 0.95):.0f})",
        "tracker per step, wall µs: median (p95)": f"{statistics.median(walls):.0f} ({_q(walls, 0.95):.0f})",
        "reference work (3 json.dumps) µs, warm / after a pause": (
            f"{statistics.median(r['reference_us']['warm'] for r in run.results):.0f} / "
            f"{statistics.median(r['reference_us']['after_pause'] for r in run.results):.0f}"),
        "rank's tracker threads, CPU ms/s": f"{statistics.median(background):.1f}",
        "rank's import + start(), CPU s": f"{statistics.median(r['start_cpu_s'] for r in run.results):.2f}",
        "finalize wall s: median (max)": (f"{statistics.median(r['finalize_s'] for r in run.results):.2f} "
                                          f"({max(r['finalize_s'] for r in run.results):.2f})"),
        "exporter peak RSS MiB (VmHWM before finalize): median (max)": (
            f"{statistics.median(e['peak_rss'] for e in exporters) / 2**20:.0f} "
            f"({max(e['peak_rss'] for e in exporters) / 2**20:.0f})"),
        "exporter startup CPU s (until start records committed)": f"{statistics.median(startup):.2f}",
        "exporter CPU s / 1000 records after startup: median (max)": (
            f"{statistics.median(per_1000):.3f} ({max(per_1000):.3f})"),
        "exporter CPU ms/s, rank idle (polls, observers) / training": (
            f"{statistics.median(idle):.1f} / {statistics.median(busy):.1f}"),
        "exporter CPU s / 1000 records net of idle: median": f"{statistics.median(net):.3f}",
        "exporter CPU s in all / 1000 records": (
            f"{1000 * sum(e['cpu_s'] for e in exporters) / sum(e['records'] for e in exporters):.3f}"),
        "audit records per rank": f"{statistics.median(e['records'] for e in exporters):.0f}",
        "trainer peak RSS MiB": (
            f"{statistics.median(r['trainer_peak_rss'] for r in run.results) / 2**20:.0f}"),
        "warnings (all ranks)": str(sum(len(r["warnings"]) for r in run.results)),
        "machine CPU busy during training": f"{100 * run.busy:.0f} %",
        "run wall s (waves of)": f"{run.wall_s:.0f} ({run.wave})",
    })
    return column


def extrapolate(run: Run, ranks: int) -> list[str]:
    """1,000 ranks on 125 nodes of 8, through the shipped agent -> gateway configs, on paper."""
    agent = agent_config()
    rate = rates(run)
    replay = replay_agents(run, agent)
    nodes = ranks // PER_NODE
    lines = [f"\n## On paper: {ranks:,} ranks = {nodes} nodes x {PER_NODE}, agent per node -> gateway pool\n",
             f"Agent batching, read from collector/otelcol-agent.yaml: `{agent['where']}` = flush_timeout "
             f"{agent['flush_timeout']}, min_size {agent['min_size']} {agent['sizer']}, max_size "
             f"{agent['max_size']}; exporter `{agent['exporter']}` compression {agent['compression']} "
             f"(the collector's default where the file says nothing). Per-node figures replay this run's "
             f"{max(1, math.ceil(run.ranks / PER_NODE))} simulated nodes' requests through that batcher.\n",
             "| per second | ranks -> agents (all nodes) | agents -> gateway pool | items/s | gateway cores "
             "at the assumed capacity |", "|---|---|---|---|---|"]
    cores = spans = 0.0
    for signal in SIGNALS:
        items = rate[signal]["items"] * ranks / 60
        cores += items / GATEWAY_CORE[signal]
        spans += items if signal == "traces" else 0.0
        lines.append(f"| {signal} | {rate[signal]['requests'] * ranks / 60:,.0f} req, "
                     f"{_kib(rate[signal]['bytes'] * ranks / 60)} KiB | "
                     f"{replay[signal]['batches'] * nodes / 60:,.1f} req, "
                     f"{_kib(replay[signal]['bytes'] * nodes / 60)} KiB "
                     f"({_kib(replay[signal]['wire_bytes'] * nodes / 60)} KiB {agent['compression']}) | "
                     f"{items:,.0f} {ITEMS[signal]} | {items / GATEWAY_CORE[signal]:.2f} |")
    replicas = max(2, math.ceil(2 * cores))
    node_cores = cores - spans / GATEWAY_CORE["traces"] * (1 - 1 / PER_NODE)
    ceiling = nodes * len(SIGNALS) / agent["flush_timeout_s"] if agent["flush_timeout_s"] else float("inf")
    lines += ["", f"Requests into the pool are bounded by the batcher: at most {ceiling:,.0f}/s ({nodes} "
              f"agents x {len(SIGNALS)} signals, a batch per flush_timeout each, while no batch reaches "
              "min_size); bytes are what the ranks send, plus the attributes resource_detection adds.",
              "", f"Assumed gateway capacity: one core ingests {GATEWAY_CORE['traces']:,.0f} spans/s, "
              f"{GATEWAY_CORE['metrics']:,.0f} data points/s or {GATEWAY_CORE['logs']:,.0f} log records/s "
              "(Splunk's published sizing for its OpenTelemetry Collector distribution, not measured here; "
              "our pipelines only add resource attributes, so it is a fair order of magnitude, not more). "
              f"Load: {cores:.2f} cores -> {replicas} gateway replicas of 1 core (2x headroom, at least 2 "
              "for N+1; an agent's file queue replaying an outage's backlog wants the headroom). With "
              f"LEZEA_SPAN_RANKS=node (one rank of {PER_NODE} exports its scope and phase spans): "
              f"{spans / PER_NODE:,.0f} spans/s, {node_cores:.2f} cores -> "
              f"{max(2, math.ceil(2 * node_cores))} replicas. Spans scale with the step rate (4 phases a "
              "step here); the rest hardly does."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=150.0, help="simulated work per step (sleep)")
    parser.add_argument("--wave", type=int, default=16,
                        help="ranks started and trained together (a multiple of 8: whole nodes); waves one "
                             "after the other")
    parser.add_argument("--idle-s", type=float, default=2.0, help="each exporter watched idle this long")
    parser.add_argument("--compare", type=int, default=1, help="also run this many ranks (0: none)")
    parser.add_argument("--span-ranks", default="all", help="LEZEA_SPAN_RANKS of every rank")
    parser.add_argument("--no-metrics-port", dest="metrics_port", action="store_false",
                        help="start(prometheus_port=None): no /metrics")
    parser.add_argument("--extrapolate", type=int, default=1000, help="ranks of the paper extrapolation")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders")
    parser.add_argument("--rank-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_of is not None:
        rank_main(args.rank_of, args.steps, args.step_ms, args.metrics_port, args.idle_s)
        return 0
    runs = [launch(args.ranks, args)]
    if args.compare:
        runs.append(launch(args.compare, args))
    runs.sort(key=lambda run: run.ranks)
    columns = [figures(run) for run in runs]
    print(f"# Scale simulation: {args.steps} steps x {args.step_ms:g} ms, 4 phases + 4 metrics a step\n")
    print(f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, exporter "
          f"process per rank, LEZEA_SPAN_RANKS={args.span_ranks}, "
          f"/metrics {'on' if args.metrics_port else 'off'}, observers on (default); ranks run in waves of "
          f"{args.wave} (started together, a barrier, trained together; the next wave after), all one "
          "experiment.\n")
    print("| | " + " | ".join(f"{run.ranks} rank{'s' * (run.ranks > 1)}" for run in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for label in columns[0]:
        print(f"| {label} | " + " | ".join(column[label] for column in columns) + " |")
    largest = runs[-1]
    print(f"\n## Series per metric at the receiver, {largest.ranks} ranks\n")
    print("| metric | ranks | keys | series | ranks x keys | |\n|---|---|---|---|---|---|")
    for name, ranks, keys, found, expected, ok in series_check(largest):
        print(f"| {name} | {ranks} | {keys} | {found} | {expected} | {'PASS' if ok else 'FAIL'} |")
    print("\n".join(extrapolate(largest, args.extrapolate)))
    return 0 if all(row[-1] for run in runs for row in series_check(run)) else 1


if __name__ == "__main__":
    sys.exit(main())
