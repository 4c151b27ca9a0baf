"""``lezea-otel show`` of one process's run: its figures, scope tree, artifacts, words and advice."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table
from rich.tree import Tree

from lezea_otel.analysis.compare import gpu_stats, tags_of
from lezea_otel.analysis.runs import Run
from lezea_otel.cli.common import console, num, say, when
from lezea_otel.trainer.exporter_link import delivery_report
from lezea_otel.util.processes import alive


def run_data(loaded: Run) -> dict[str, Any]:
    """What ``show`` prints of one run, and ``show --json`` carries: its summary (as
    ``get_experiment_summary()`` has it), who it is, each metric's trend, each phase's GPU p50/p95 and how
    many instances have GPU time (``gpu_count``, ``gpu_p50_s``, ``gpu_p95_s`` beside the summary's
    ``gpu_total_s``, only where CUDA events measured it), its advice."""
    summary = loaded.summary()
    gpu: dict[str, list[float | None]] = {}
    for item in loaded.timed:
        if item.kind == "phase":
            gpu.setdefault(item.name, []).append(item.gpu_duration_s)
    for name, phase in summary["phases"].items():
        if any(d is not None for d in gpu.get(name, ())):
            phase.update(gpu_stats(gpu[name]))
    summary["trends"] = {key: trend(loaded.history.get(key, [])) for key in summary["metrics"]}
    summary["run"] = {"id": loaded.id, "name": loaded.start.get("name"), "path": str(loaded.path),
                      "purpose": loaded.start.get("purpose") or None, "tags": tags_of(loaded),
                      "targets": list(loaded.start.get("targets", [])), "last_record_ns": loaded.last_time_ns,
                      "error": error_line(loaded.end["error"]) if loaded.end and loaded.end.get("error")
                      else None, "calls_after_end": loaded.after_end}
    summary["delivery"] = delivered(loaded.exporter)
    summary["recommendations"] = loaded.recommendations()
    return summary


def delivered(report: dict[str, Any]) -> dict[str, Any]:
    """The exporter's report (``exporter/report.json``) as the run's summary has it, and whether the
    exporter process still delivers the run in the background (after finalize's bound)."""
    delivery = delivery_report("process", report)
    delivery["background"] = background_exporter(report)
    return delivery


def background_exporter(report: dict[str, Any]) -> int | None:
    """The pid of the run's exporter process while it still delivers the run after finalize's bound."""
    pid = report.get("pid")
    return pid if report.get("finishing") and type(pid) is int and alive(pid) else None


def delivery_lines(delivery: dict[str, Any]) -> list[str]:
    """Per destination what was delivered of what was produced, what is left in the audit, and who is
    still at it."""
    lines = []
    for where, signals in (("collector", delivery["signals"]), ("files", delivery["files"])):
        if signals:
            lines.append(f"delivered to the {where}: " + ", ".join(
                f"{signal} {counts['exported']} of {counts['produced']}"
                for signal, counts in signals.items()))
            left = ", ".join(f"{counts['left_in_audit']} {signal}" for signal, counts in signals.items()
                             if counts["left_in_audit"])
            if left:
                lines.append(f"left in the audit for the {where}: {left} (`lezea-otel export` sends them)")
    if delivery.get("background"):
        lines.append(f"the exporter is still delivering in the background (pid {delivery['background']})")
    return lines


def print_run(summary: dict[str, Any], title: str | None = None) -> None:
    """Everything about one run (``run_data``: its forked workers' records folded in), under ``title``
    (its name)."""
    who = summary["run"]
    console.rule(title or f"{who['name'] or '?'} ({who['id']})")
    evals = ", ".join(f"{n} {split} calls" for split, n in summary["steps"]["splits"].items()
                      if split != "train")
    console.print(f"status {summary['status']}, {summary['duration_s']:.1f} s, "
                  f"{summary['steps']['count']} steps (last step {summary['steps']['last']}"
                  + (f"; {evals}" if evals else "") + f"), purpose: {who['purpose'] or '-'}"
                  + (f", tags: {', '.join(who['tags'])}" if who["tags"] else ""))
    head = summary["headline"]
    if head is not None:
        console.print(f"headline: {head['key']} {num(head['last'])} (best {num(head['best'])})", markup=False)
    if summary["status"] in ("crashed", "running", "unknown"):
        console.print(f"no end record: last record at {when(who['last_record_ns'])} UTC, "
                      f"last step {summary['steps']['last']}")
    if summary["run"]["error"]:
        say(console, "error:", "red", f" {summary['run']['error']}")
    if summary["config"]:
        console.print("config: " + ", ".join(f"{k}={v}" for k, v in summary["config"].items()))
    metrics = Table(title="Metrics")
    for column in ("key", "count", "last", "best", "goal", "min", "max", "trend", "non-finite"):
        metrics.add_column(column)
    for key, stats in summary["metrics"].items():
        metrics.add_row(key, str(stats["count"]), num(stats["last"]), num(stats["best"]),
                        stats["goal"] or "-", num(stats["min"]), num(stats["max"]), summary["trends"][key],
                        str(stats["nonfinite"]))
    console.print(metrics)
    tree = Tree("scopes and phases")
    nodes: dict[str, Any] = {}
    for path, scope in sorted(summary["scopes"].items()):
        parent = nodes.get(path.rsplit("/", 1)[0]) if "/" in path else None
        nodes[path] = (parent or tree).add(f"{path.rsplit('/', 1)[-1]}: {scope['count']}x, total "
                                           f"{scope['total_s']:.3f} s, max {scope['max_s']:.3f} s"
                                           + resources(scope)
                                           + (f", {scope['errors']} errors" if scope["errors"] else ""))
    for name, phase in sorted(summary["phases"].items(), key=lambda item: -item[1]["total_s"]):
        tree.add(f"phase {name}: {phase['count']}x, total {phase['total_s']:.3f} s, "
                 f"max {phase['max_s']:.3f} s" + gpu_text(phase) + resources(phase))
    console.print(tree)
    for title, rows in (("Checkpoints", summary["checkpoints"]), ("Datasets", summary["datasets"])):
        for row in rows:
            console.print(f"{title[:-1]}: " + ", ".join(f"{k}={v}" for k, v in row.items() if v is not None))
    for key, stats in summary["rewards"].items():
        console.print(f"reward {key}: last {num(stats['last'])}, best {num(stats['best'])}, "
                      f"n={stats['count']}")
    for component, totals in summary["resources"].items():
        console.print(f"resources {component}: " + ", ".join(f"{k}={num(v)}" for k, v in totals.items()))
    observed = summary.get("observed") or {}
    if observed:
        console.print(f"observed: {observed['samples']} samples, CPU {observed['cpu_hours'] * 3600:.1f} s, "
                      f"peak RSS {observed['memory_peak_bytes'] / 2**20:.0f} MiB, "
                      f"GPU {observed['gpu_hours']:.3f} h, "
                      f"energy {observed['energy_joules'].get('total', 0.0):.1f} J"
                      + "".join(f", {g['name']} {g['hw.id']}" for g in observed.get("gpus", [])))
    if summary["cost"]:
        console.print("cost: " + ", ".join(f"{k}={num(v)}" for k, v in summary["cost"].items()))
    for comment in summary["comments"]:
        console.print(f"comment: {comment}")
    if summary["conclusion"]:
        console.print(f"conclusion: {summary['conclusion']}")
    targets = summary["run"]["targets"]
    console.print("delivery: " + ("; ".join(targets) if targets else "local audit only"))
    for line in delivery_lines(summary["delivery"]):
        console.print(line, markup=False)
    if summary["run"].get("calls_after_end"):
        console.print(f"after finalize: {summary['run']['calls_after_end']} call(s), in the audit only (not "
                      "in these figures, as finalize returned them)")
    for item in summary["recommendations"]:
        console.print(f"[{item['severity']}] {item['message']}", markup=False)
    workers = summary["workers"]
    if workers["count"]:
        console.print(f"forked workers: {workers['count']}, folded into the figures above "
                      f"({workers['steps']} step records of theirs: values counted, not steps)")


def gpu_text(phase: dict[str, Any]) -> str:
    """A phase's GPU time where CUDA events measured it: ``, GPU total 1.200 s, p50 0.0100 s`` (with
    ``of 40`` when only some instances were)."""
    if not phase.get("gpu_count"):
        return ""
    some = f" (of {phase['gpu_count']})" if phase["gpu_count"] != phase["count"] else ""
    return f", GPU total {phase['gpu_total_s']:.3f} s{some}, p50 {phase['gpu_p50_s']:.4f} s"


def resources(entry: dict[str, Any]) -> str:
    parts = []
    if entry.get("cpu.seconds"):
        parts.append(f"CPU {entry['cpu.seconds']:.2f} s")
    if entry.get("gpu.energy"):
        parts.append(f"GPU {entry['gpu.energy']:.1f} J")
    if entry.get("memory.peak"):
        parts.append(f"peak RSS {entry['memory.peak'] / 2**20:.0f} MiB")
    return (", " + ", ".join(parts)) if parts else ""


NEAR_ZERO = 1e-9
"""A start this close to zero makes a relative change meaningless: the trend is then an absolute one."""


def trend(points: list[tuple[int | None, float]]) -> str:
    """The mean of the last quarter against the first: ``down 12%``, or ``down by 0.003`` where the start
    is near zero or the values cross zero (where a percentage would read ``down 111%``); ``flat`` under 1%
    (or no change at all)."""
    finite = [v for _, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(finite) < 4:
        return "-"
    quarter = max(1, len(finite) // 4)
    first, last = sum(finite[:quarter]) / quarter, sum(finite[-quarter:]) / quarter
    if last == first:
        return "flat"
    direction = "down" if last < first else "up"
    if abs(first) < NEAR_ZERO or (first < 0) != (last < 0):
        return f"{direction} by {abs(last - first):.3g}"
    change = (last - first) / abs(first)
    return "flat" if abs(change) < 0.01 else f"{direction} {abs(change):.0%}"


def error_line(text: str) -> str:
    """An exception as ``Type: message`` once: ``KeyboardInterrupt`` (no message), not ``KeyboardInterrupt:``,
    and no type repeated where the message is the type (``Type: Type``)."""
    kind, sep, message = text.partition(":")
    message = message.strip()
    if not sep or not message or message == kind:
        return kind.strip() or text
    return message if message.startswith(kind + ":") else f"{kind}: {message}"
