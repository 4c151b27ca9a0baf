"""``lezea-otel``: look at runs, find slow phases, share a report, check a node — from the run folder only."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from lezea_otel.analysis.compare import STATUSES
from lezea_otel.cli.common import console, err, load, runs_dir, runs_dir_option, say
from lezea_otel.cli.output import json_option, print_json
from lezea_otel.config.settings import resolve_settings


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
    invoked = _invocation()
    for command in ("runs", f"show {tracker.experiment_id[:8]}", f"slow {tracker.experiment_id[:8]}",
                    f"report {tracker.experiment_id[:8]} -o report.html"):
        console.print(f"  {invoked} {command}" + (f" --runs-dir {runs_dir}" if runs_dir else ""))


def _invocation() -> str:
    """How to run this command again from here, as the user ran it: ``lezea-otel`` when that is the one on
    PATH, else the path it was started by (``.venv/bin/lezea-otel`` when the virtualenv is not active), or
    ``python -m lezea_otel`` with the interpreter that runs it."""
    def here(path: str) -> str:
        relative = os.path.relpath(path)
        return relative if not relative.startswith("..") else path

    started = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(started) != "lezea-otel":  # python -m lezea_otel
        return f"{shlex.quote(here(sys.executable))} -m lezea_otel"
    on_path = shutil.which("lezea-otel")
    if on_path is not None and os.path.samefile(on_path, started):
        return "lezea-otel"
    return shlex.quote(here(started))


@main.command("runs")
@click.argument("directory", required=False)
@click.option("--name", default=None, help="Only runs whose name contains TEXT (case-insensitive).")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Only runs with this tag (repeat: every one must be there).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only runs in this status (repeat for any of several).")
@click.option("--since", default=None, metavar="WHEN",
              help="Only runs started at or after WHEN: a duration back from now (30m, 2h, 3d) or an ISO "
                   "date/time (2026-12-01, 2026-12-01T14:00; UTC unless it names a zone).")
@json_option
def list_runs(directory: str | None, name: str | None, tags: tuple[str, ...], statuses: tuple[str, ...],
              since: str | None, as_json: bool) -> None:
    """Table of the experiments in DIRECTORY (default: LEZEA_RUNS_DIR or ./runs), one row each: a
    distributed run's status over all of its ranks (``degraded`` while one died and others go on), how
    many ranks are in which state, its tags, and rank 0's figures (the headline metric's last and best)."""
    from lezea_otel.cli.merged import parse_since, print_runs, runs_data

    folder = runs_dir(directory)
    if directory is not None and not folder.is_dir():  # a typo, not an empty folder: say so, exit 2
        say(err, "error:", "red", f" {folder} is not a folder of runs (no such directory)")
        raise SystemExit(2)
    data = runs_data(folder, name, tags, statuses,
                     parse_since(since) if since is not None else None)
    print_json(data) if as_json else print_runs(data)


@main.command()
@click.argument("run")
@runs_dir_option
@json_option
def show(run: str, runs_dir: str | None, as_json: bool) -> None:
    """Everything about one RUN (id, unique id prefix, or path).

    A distributed run: a row per rank (node, attempts, status, last step, steps/s, last loss), the
    attempts of a restarted rank, the straggler, then rank 0's latest attempt in full. A path to one
    rank's folder (runs/<id>/rank-<r>) shows that rank alone. Values and phases of forked workers
    (DataLoader workers) count in their process's figures. Phases timed with CUDA events show their GPU
    time too."""
    from lezea_otel.cli.merged import experiment_data, print_experiment

    data = experiment_data(load(run, runs_dir))
    print_json(data) if as_json else print_experiment(data)


@main.command()
@click.argument("run")
@click.option("--top", default=10, show_default=True, help="How many names and instances to list.")
@runs_dir_option
@json_option
def slow(run: str, top: int, runs_dir: str | None, as_json: bool) -> None:
    """Slowest scopes and phases of RUN, and their slowest instances with the step that was running and
    trace/span ids for Tempo; GPU p50/p95/total next to the wall time where phases were timed with CUDA
    events (ranked by GPU total when every instance of the top phases has one, and said so); for a
    distributed run also p50/p95 per rank and the straggler of each phase against the median rank."""
    from lezea_otel.cli.merged import print_slow, slow_data

    data = slow_data(load(run, runs_dir), top)
    print_json(data) if as_json else print_slow(data)


@main.command()
@click.argument("runs", nargs=-1, required=True)
@runs_dir_option
@json_option
def compare(runs: tuple[str, ...], runs_dir: str | None, as_json: bool) -> None:
    """RUN RUN [RUN ...] side by side (ids, unique prefixes or paths): the config keys that differ, each
    metric's last and best (best only where the metric has a goal; each run's headline first), steps and
    steps/s, phase p50 and total (GPU too where measured), observed CPU hours, peak RSS, GPU hours, and
    cost. A distributed run is compared by its headline member (rank 0's latest attempt), with its world
    size."""
    from lezea_otel.analysis.compare import compare as side_by_side
    from lezea_otel.cli.compare import print_compare

    if len(runs) < 2:
        raise click.UsageError("compare needs two runs or more")
    data = side_by_side([load(run, runs_dir) for run in runs])
    print_json(data) if as_json else print_compare(data)


@main.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("-o", "--output", default="report.html", show_default=True, help="HTML file to write.")
@runs_dir_option
def report(runs: tuple[str, ...], output: str, runs_dir: str | None) -> None:
    """Write one self-contained HTML report of RUN (opens offline: plots and their JavaScript embedded); a
    distributed run's report merges its ranks (per-rank table, curves and phases, stragglers). Several
    RUNs: one report drawing their curves together."""
    from lezea_otel.cli.report import write_report

    loaded = [load(run, runs_dir) for run in runs]
    path = write_report(loaded[0] if len(loaded) == 1 else loaded, Path(output))
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
    from lezea_otel.cli.show import background_exporter
    from lezea_otel.exporter.offline import ExportError, ExportResult, export_run, replay_notices

    experiment = load(run, runs_dir)
    if any(member.status == "running" for member in experiment.members):
        say(err, "error:", "red", f" the run is still live and its own exporter delivers it; {command} it "
            "after it ends")
        raise SystemExit(1)
    busy = [pid for member in experiment.members if (pid := background_exporter(member.run.exporter))]
    if busy:
        say(err, "error:", "red", f" the run's exporter (pid {busy[0]}) still delivers it in the background "
            f"(within LEZEA_FINISH_WINDOW); {command} it after that, or stop that process first")
        raise SystemExit(1)
    settings = resolve_settings({"endpoint": endpoint, "protocol": protocol})
    if not settings.otlp_signals:
        say(err, "error:", "red",
            " no OTLP endpoint: pass --endpoint URL or set OTEL_EXPORTER_OTLP_ENDPOINT")
        raise SystemExit(2)
    for level, notice in replay_notices(experiment.start_ns or experiment.last_time_ns, time.time_ns()):
        say(err, f"{level}:", "yellow", f" {notice}")
    result = ExportResult()
    for member in experiment.members:  # each rank and attempt has its own audit and its own cursors
        try:
            done = export_run(member.run.path, settings, crashed=member.status == "crashed",
                              everything=everything)
        except ExportError as error:
            say(err, "error:", "red", f" {error}; run {command} again to resume")
            raise SystemExit(1) from None
        result.problems.extend(done.problems)
        for into, counts in ((result.sent, done.sent), (result.rejected, done.rejected)):
            for signal, count in counts.items():
                into[signal] = into.get(signal, 0) + count
    for problem in result.problems:
        say(err, "skipped:", "yellow", f" {problem}")
    target = settings.endpoint or "the collector"
    if not result.sent and not result.rejected:
        console.print(f"Nothing to {command}: {target} has this run already.")
        return
    sent = ", ".join(f"{signal} {count}" for signal, count in sorted(result.sent.items())) or "nothing"
    console.print(f"Exported to {target}: {sent}")
    if result.rejected:
        refused = ", ".join(f"{signal} {count}" for signal, count in sorted(result.rejected.items()))
        say(err, "warning:", "yellow", f" refused for good by the collector: {refused}; skipped (the audit "
             f"keeps them: `lezea-otel {command} --all` sends the whole run again)")


@main.command()
@click.option("--port", type=int, default=None,
              help="The /metrics port to check (default: LEZEA_PROMETHEUS_PORT or 8000).")
def doctor(port: int | None) -> None:
    """Check this node's setup: settings and their sources, OTLP endpoint, NVML/GPUs, /metrics port,
    runs folder."""
    from lezea_otel.cli.doctor import doctor as check

    check(port)


if __name__ == "__main__":
    sys.exit(main())
