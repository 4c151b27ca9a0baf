"""``lezea-otel``: look at runs, find slow phases, share a report, check a node — from the run folder only."""

from __future__ import annotations

import math
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from lezea_otel.config.settings import resolve_settings
from lezea_otel.model.runs import Run, RunNotFound, load_run, resolve_run, run_folders, slow_table

_WIDTH = None if sys.stdout.isatty() else 160  # pipes and CI logs get wide tables, not 80 columns
# User text (ids, comments, config) is printed as written: no markup ("[/x]" would raise), no ":a:" emoji.
console = Console(highlight=False, soft_wrap=True, width=_WIDTH, emoji=False, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH, emoji=False, markup=False)


def _say(target: Console, label: str, style: str, rest: str) -> None:
    """A styled label (``error:``, ``ok``) and plain text after it."""
    target.print(Text.assemble((label, style), rest))


def _runs_dir(value: str | None) -> Path:
    return Path(value) if value else resolve_settings({}).runs_dir


def _load(run: str, runs_dir: str | None) -> Run:
    try:
        loaded = load_run(resolve_run(run, _runs_dir(runs_dir)))
    except RunNotFound as error:
        _say(err, "error:", "red", f" {error}")
        raise SystemExit(2) from None
    for problem in loaded.problems[:1]:
        more = f" ({len(loaded.problems) - 1} more bad lines)" if len(loaded.problems) > 1 else ""
        _say(err, "warning:", "yellow", f" {problem}{more}; showing everything readable")
    return loaded


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _when(time_ns: int | None) -> str:
    if not time_ns:
        return "-"
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


runs_dir_option = click.option("--runs-dir", envvar="LEZEA_RUNS_DIR", default=None,
                               help="Folder holding run folders (default: LEZEA_RUNS_DIR or ./runs).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lezea_otel")
def main() -> None:
    """Look at lezea_otel runs from their folders: no collector, no backend needed."""


@main.command()
@click.option("--steps", default=60, show_default=True, help="Training steps per builder.")
@click.option("--endpoint", default=None,
              help="OTLP endpoint (e.g. http://localhost:4318); default: local mode.")
@runs_dir_option
def demo(steps: int, endpoint: str | None, runs_dir: str | None) -> None:
    """Run a synthetic training that exercises every tracker call (one phase is deliberately slow)."""
    from lezea_otel.cli.demo import run

    tracker = run(steps, endpoint, runs_dir)
    console.print(f"Run {tracker.experiment_id} written to {tracker.run_dir}")
    console.print("Next:")
    for command in ("runs", f"show {tracker.experiment_id[:8]}", f"slow {tracker.experiment_id[:8]}",
                    f"report {tracker.experiment_id[:8]} -o report.html"):
        console.print(f"  lezea-otel {command}" + (f" --runs-dir {runs_dir}" if runs_dir else ""))


@main.command("runs")
@click.argument("directory", required=False)
def list_runs(directory: str | None) -> None:
    """Table of the runs in DIRECTORY (default: LEZEA_RUNS_DIR or ./runs)."""
    folder = _runs_dir(directory)
    folders = run_folders(folder)
    if not folders:
        console.print(f"No runs in {folder}.")
        return
    table = Table(title=f"Runs in {folder}")
    for column in ("id", "name", "purpose", "status", "start (UTC)", "last seen (UTC)", "duration", "steps",
                   "last loss", "best loss", "delivery"):
        table.add_column(column, overflow="fold")
    for path in folders:
        run = load_run(path)
        loss = run.main_loss()
        stats = run.state.metrics[loss].as_dict() if loss else {}
        targets = run.start.get("targets", [])
        delivery = "OTLP" if any(t.startswith("OTLP") for t in targets) else "local"
        table.add_row(run.id[:8], run.start.get("name") or "?", run.start.get("purpose", ""), run.status,
                      _when(run.state.start_ns), _when(run.last_time_ns), f"{run.duration_s:.1f} s",
                      str(run.state.steps), _num(stats.get("last")), _num(stats.get("best")), delivery)
    console.print(table)


@main.command()
@click.argument("run")
@runs_dir_option
def show(run: str, runs_dir: str | None) -> None:
    """Everything about one RUN (id, unique id prefix, or path)."""
    loaded = _load(run, runs_dir)
    summary = loaded.summary()
    console.rule(f"{loaded.start.get('name', '?')} ({loaded.id})")
    console.print(f"status {summary['status']}, {summary['duration_s']:.1f} s, "
                  f"{summary['steps']['count']} steps (last step {summary['steps']['last']}), "
                  f"purpose: {loaded.start.get('purpose') or '-'}")
    if summary["status"] in ("crashed", "running", "unknown"):
        console.print(f"no end record: last record at {_when(loaded.last_time_ns)} UTC, "
                      f"last step {summary['steps']['last']}")
    if loaded.end and loaded.end.get("error"):
        _say(console, "error:", "red", f" {loaded.end['error']}")
    if summary["config"]:
        console.print("config: " + ", ".join(f"{k}={v}" for k, v in summary["config"].items()))
    metrics = Table(title="Metrics")
    for column in ("key", "count", "last", "best", "goal", "min", "max", "trend", "non-finite"):
        metrics.add_column(column)
    for key, stats in summary["metrics"].items():
        trend = _trend(loaded.history.get(key, []))
        metrics.add_row(key, str(stats["count"]), _num(stats["last"]), _num(stats["best"]), stats["goal"],
                        _num(stats["min"]), _num(stats["max"]), trend, str(stats["nonfinite"]))
    console.print(metrics)
    tree = Tree("scopes and phases")
    nodes: dict[str, Any] = {}
    for path, scope in sorted(summary["scopes"].items()):
        parent = nodes.get(path.rsplit("/", 1)[0]) if "/" in path else None
        nodes[path] = (parent or tree).add(f"{path.rsplit('/', 1)[-1]}: {scope['count']}x, total "
                                           f"{scope['total_s']:.3f} s, max {scope['max_s']:.3f} s"
                                           + _resources(scope)
                                           + (f", {scope['errors']} errors" if scope["errors"] else ""))
    for name, phase in sorted(summary["phases"].items(), key=lambda item: -item[1]["total_s"]):
        tree.add(f"phase {name}: {phase['count']}x, total {phase['total_s']:.3f} s, "
                 f"max {phase['max_s']:.3f} s" + _resources(phase))
    console.print(tree)
    for title, rows in (("Checkpoints", summary["checkpoints"]), ("Datasets", summary["datasets"])):
        for row in rows:
            console.print(f"{title[:-1]}: " + ", ".join(f"{k}={v}" for k, v in row.items() if v is not None))
    for key, stats in summary["rewards"].items():
        console.print(f"reward {key}: last {_num(stats['last'])}, best {_num(stats['best'])}, "
                      f"n={stats['count']}")
    for component, totals in summary["resources"].items():
        console.print(f"resources {component}: " + ", ".join(f"{k}={_num(v)}" for k, v in totals.items()))
    observed = summary.get("observed") or {}
    if observed:
        console.print(f"observed: {observed['samples']} samples, CPU {observed['cpu_hours'] * 3600:.1f} s, "
                      f"peak RSS {observed['memory_peak_bytes'] / 2**20:.0f} MiB, "
                      f"GPU {observed['gpu_hours']:.3f} h, "
                      f"energy {observed['energy_joules'].get('total', 0.0):.1f} J"
                      + "".join(f", {g['name']} {g['hw.id']}" for g in observed.get("gpus", [])))
    if summary["cost"]:
        console.print("cost: " + ", ".join(f"{k}={_num(v)}" for k, v in summary["cost"].items()))
    for comment in summary["comments"]:
        console.print(f"comment: {comment}")
    if summary["conclusion"]:
        console.print(f"conclusion: {summary['conclusion']}")
    targets = loaded.start.get("targets", [])
    console.print("delivery: " + ("; ".join(targets) if targets else "local audit only"))
    for item in loaded.recommendations():
        console.print(f"[{item['severity']}] {item['message']}", markup=False)


def _resources(entry: dict[str, Any]) -> str:
    parts = []
    if entry.get("cpu.seconds"):
        parts.append(f"CPU {entry['cpu.seconds']:.2f} s")
    if entry.get("gpu.energy"):
        parts.append(f"GPU {entry['gpu.energy']:.1f} J")
    if entry.get("memory.peak"):
        parts.append(f"peak RSS {entry['memory.peak'] / 2**20:.0f} MiB")
    return (", " + ", ".join(parts)) if parts else ""


def _trend(points: list[tuple[int | None, float]]) -> str:
    finite = [v for _, v in points if isinstance(v, float) and math.isfinite(v)]
    if len(finite) < 4:
        return "-"
    quarter = max(1, len(finite) // 4)
    first, last = sum(finite[:quarter]) / quarter, sum(finite[-quarter:]) / quarter
    change = (last - first) / (abs(first) or 1.0)
    return "flat" if abs(change) < 0.01 else ("down" if change < 0 else "up") + f" {abs(change):.0%}"


@main.command()
@click.argument("run")
@click.option("--top", default=10, show_default=True, help="How many names and instances to list.")
@runs_dir_option
def slow(run: str, top: int, runs_dir: str | None) -> None:
    """Slowest scopes and phases of RUN, and their slowest instances with trace/span ids for Tempo."""
    loaded = _load(run, runs_dir)
    rows = slow_table(loaded)
    for kind, title in (("phase", "Phases"), ("scope", "Scopes")):
        table = Table(title=f"{title} by total time")
        for column in ("name", "count", "total s", "p50 s", "p95 s", "max s"):
            table.add_column(column)
        for row in [r for r in rows if r["kind"] == kind][:top]:
            table.add_row(row["name"], str(row["count"]), f"{row['total_s']:.3f}", f"{row['p50_s']:.4f}",
                          f"{row['p95_s']:.4f}", f"{row['max_s']:.4f}")
        if table.row_count:
            console.print(table)
    instances = Table(title="Slowest instances (paste the trace id into Tempo)")
    for column in ("kind", "name", "duration s", "step", "trace id", "span id"):
        instances.add_column(column)
    ranked = sorted(loaded.timed, key=lambda t: (t.kind != "phase", -t.duration_s))
    for item in ranked[:top]:
        instances.add_row(item.kind, item.name, f"{item.duration_s:.4f}", str(item.step),
                          item.trace_id or "-", item.span_id or "-")
    console.print(instances)
    if not loaded.timed:
        console.print("This run recorded no scopes or phases (use tracker.span(...) or the *_scope calls).")


@main.command()
@click.argument("run")
@click.option("-o", "--output", default="report.html", show_default=True, help="HTML file to write.")
@runs_dir_option
def report(run: str, output: str, runs_dir: str | None) -> None:
    """Write one self-contained HTML report of RUN (opens offline: plots and their JavaScript embedded)."""
    from lezea_otel.cli.report import write_report

    loaded = _load(run, runs_dir)
    path = write_report(loaded, Path(output))
    console.print(f"Report written to {path} ({path.stat().st_size // 1024} KiB)")


def _export_options(command: Any) -> Any:
    for option in reversed([
        click.argument("run"),
        click.option("--endpoint", default=None,
                     help="Collector base URL (default: OTEL_EXPORTER_OTLP_ENDPOINT)."),
        click.option("--protocol", type=click.Choice(["http/protobuf", "grpc"]), default=None,
                     help="Default: OTEL_EXPORTER_OTLP_PROTOCOL or http/protobuf."),
        click.option("--all", "everything", is_flag=True, help="Send the whole run again, not only what this "
                     "collector has not acknowledged."),
        runs_dir_option,
    ]):
        command = option(command)
    return command


@main.command("export")
@_export_options
def export(run: str, endpoint: str | None, protocol: str | None, everything: bool,
           runs_dir: str | None) -> None:
    """Export RUN from its audit to a collector: what it has not acknowledged, resumable, never twice.

    After an outage this is exactly what the run's own exporter could not deliver, with its original
    timestamps and the configured OTEL_EXPORTER_OTLP_* headers, TLS and compression."""
    _export(run, endpoint, protocol, everything, runs_dir, "export")


@main.command("replay")
@_export_options
def replay(run: str, endpoint: str | None, protocol: str | None, everything: bool,
           runs_dir: str | None) -> None:
    """Alias of `export`: send RUN's undelivered part (or with --all all of it) to a collector."""
    _export(run, endpoint, protocol, everything, runs_dir, "replay")


def _export(run: str, endpoint: str | None, protocol: str | None, everything: bool, runs_dir: str | None,
            command: str) -> None:
    from lezea_otel.exporter.offline import ExportError, export_run

    loaded = _load(run, runs_dir)
    if loaded.status == "running":
        _say(err, "error:", "red", f" the run is still live and its own exporter delivers it; {command} it "
             "after it ends")
        raise SystemExit(1)
    settings = resolve_settings({"endpoint": endpoint, "protocol": protocol})
    if not settings.otlp_signals:
        _say(err, "error:", "red",
             " no OTLP endpoint: pass --endpoint URL or set OTEL_EXPORTER_OTLP_ENDPOINT")
        raise SystemExit(2)
    try:
        result = export_run(loaded.path, settings, crashed=loaded.status == "crashed", everything=everything)
    except ExportError as error:
        _say(err, "error:", "red", f" {error}; run {command} again to resume")
        raise SystemExit(1) from None
    for problem in result.problems:
        _say(err, "skipped:", "yellow", f" {problem}")
    target = settings.endpoint or "the collector"
    if not result.sent and not result.rejected:
        console.print(f"Nothing to {command}: {target} has this run already.")
        return
    sent = ", ".join(f"{signal} {count}" for signal, count in sorted(result.sent.items())) or "nothing"
    console.print(f"Exported to {target}: {sent}")
    if result.rejected:
        refused = ", ".join(f"{signal} {count}" for signal, count in sorted(result.rejected.items()))
        _say(err, "warning:", "yellow", f" refused for good by the collector: {refused}; skipped (the audit "
             f"keeps them: `lezea-otel {command} --all` sends the whole run again)")


@main.command()
@click.option("--port", type=int, default=None,
              help="The /metrics port to check (default: LEZEA_PROMETHEUS_PORT or 8000).")
def doctor(port: int | None) -> None:
    """Check this node's setup: settings and their sources, OTLP endpoint, NVML/GPUs, /metrics port,
    runs folder."""
    settings = resolve_settings({})
    failures = 0
    table = Table(title="Resolved settings (README's configuration table; OTel SDK variables when set)")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for row in settings.rows():
        table.add_row(*row)
    table.add_row("otlp signals", ", ".join(sorted(settings.otlp_signals)) or "none (local mode)", "")
    console.print(table)
    for problem in settings.problems:
        failures += 1
        _say(console, "FAIL", "red", f" configuration: {problem}")
    failures += _check_endpoint(settings)
    _check_nvml()
    failures += _check_port(port or settings.prometheus_port or 8000, settings.prometheus_addr,
                            configured=port is not None or settings.prometheus_port is not None)
    failures += _check_writable(settings.runs_dir)
    if failures:
        _say(console, "{failures} problem(s) found", "red", "")
        raise SystemExit(1)
    _say(console, "all checks passed", "green", "")


def _check_endpoint(settings: Any) -> int:
    if not settings.otlp_signals:
        _say(console, "ok", "green", "   OTLP: local mode (no endpoint configured), nothing to reach")
        return 0
    endpoint = settings.endpoint or settings.otel_endpoint or next(iter(settings.otlp_endpoints.values()))
    url = urllib.parse.urlparse(endpoint)
    host, port = url.hostname or "localhost", url.port or (4317 if settings.protocol == "grpc" else 4318)
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as error:
        _say(console, "FAIL", "red", f" OTLP endpoint {endpoint} is not reachable: {error}")
        return 1
    if settings.protocol != "grpc":
        request = urllib.request.Request(f"{url.scheme}://{host}:{port}/v1/traces", data=b"", method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
        try:
            urllib.request.urlopen(request, timeout=5).read()
        except urllib.error.HTTPError as error:
            _say(console, "FAIL", "red", f" OTLP/HTTP {endpoint} answered {error.code} to an empty export")
            return 1
        except OSError as error:
            _say(console, "FAIL", "red", f" OTLP/HTTP {endpoint}: {error}")
            return 1
    _say(console, "ok", "green", f"   OTLP {settings.protocol} endpoint {endpoint} answers")
    return 0


def _check_nvml() -> None:
    from lezea_otel.util.environment import gpus

    found = gpus()
    if not found:
        _say(console, "info", "yellow", " NVML: no GPU, driver or nvidia-ml-py; GPU metrics will be absent")
    for gpu in found:
        _say(console, "ok", "green",
             f"   GPU {gpu['index']}: {gpu['name']} {gpu['uuid']} (driver {gpu['driver']})")


def _check_port(port: int, addr: str, configured: bool) -> int:
    with socket.socket() as sock:
        try:
            sock.bind((addr, port))
        except OSError as error:
            _say(console, *(("FAIL", "red") if configured else ("warn", "yellow")),
                 f" /metrics port {addr}:{port} is taken: {error}")
            return 1 if configured else 0
    _say(console, "ok", "green", f"   /metrics port {addr}:{port} is free")
    return 0


def _check_writable(folder: Path) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        _say(console, "FAIL", "red", f" runs folder {folder} is not writable: {error}")
        return 1
    _say(console, "ok", "green", f"   runs folder {folder.resolve()} is writable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
