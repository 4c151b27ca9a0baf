"""Reading runs back from their folders: what the CLI and the report show, with no backend.

A run is rebuilt by replaying its ``events.jsonl`` through the same ``RunState`` the tracker used,
so ``lezea-otel show`` and ``get_experiment_summary()`` agree by construction.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audit import read_events
from .environment import host_name
from .recommendations import recommend
from .record import Record
from .run_state import RunState, metric_name

EVENTS = "events.jsonl"


class RunNotFound(LookupError):
    """No run, or more than one, matches what the user typed; the message lists close matches."""


@dataclass
class Timed:
    """One scope or phase instance, for the slow-phase view."""

    name: str
    kind: str
    duration_s: float
    step: int | None
    trace_id: str | None
    span_id: str | None
    error: str | None


@dataclass
class Run:
    path: Path
    events: list[dict[str, Any]]
    problems: list[str]
    state: RunState = field(default_factory=RunState)
    start: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    timed: list[Timed] = field(default_factory=list)
    history: dict[str, list[tuple[int | None, float]]] = field(default_factory=dict)
    last_time_ns: int = 0

    @property
    def id(self) -> str:
        return self.start.get("experiment_id", self.path.name)

    @property
    def status(self) -> str:
        """finished/failed from the end record; otherwise running, or crashed when its process is gone."""
        if self.end is not None:
            return self.end.get("status", "finished")
        pid, host = self.start.get("pid"), self.start.get("host")
        if pid and host == host_name():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return "crashed"
            except PermissionError:
                return "running"
            return "running"
        return "unknown"

    @property
    def duration_s(self) -> float:
        if self.state.start_ns is None:
            return 0.0
        end = self.state.end_ns or self.last_time_ns
        return max(0.0, (end - self.state.start_ns) / 1e9)

    def summary(self) -> dict[str, Any]:
        summary = self.state.summary(self.state.end_ns or self.last_time_ns)
        summary["duration_s"] = self.duration_s
        summary["status"] = self.status
        summary["cost"]["total_eur"] = self.state.total_cost_eur()
        return summary

    def recommendations(self, cost_limit_eur: float | None = None) -> list[dict[str, Any]]:
        advice = recommend(self.state, cost_limit_eur, self.duration_s)
        if self.status == "crashed":
            advice.insert(0, self._crash_cause())
        return advice

    def _crash_cause(self) -> dict[str, Any]:
        """Why a run died without a word, when its record shows a likely reason."""
        last_step = self.state.last_step
        causes = []
        loss = self.main_loss()
        if loss and self.history.get(loss) and not math.isfinite(self.history[loss][-1][1]):
            causes.append(f"{loss} was {self.history[loss][-1][1]} at its last step (diverged)")
        memory = [e["data"]["memory_mb"] for e in self.events
                  if e["kind"] == "resource" and isinstance(e["data"].get("memory_mb"), (int, float))][-4:]
        if len(memory) >= 3 and all(b > a for a, b in zip(memory, memory[1:])):
            causes.append(f"memory kept growing ({', '.join(f'{m:.0f}' for m in memory)} MB): likely killed by the "
                          "OOM killer")
        reason = "; ".join(causes) if causes else "no cause in the record (kill -9, node loss or OOM are the usual ones)"
        return {"rule": "crashed", "severity": "critical",
                "message": f"The run stopped without an end record after step {last_step}: {reason}.",
                "evidence": {"last_step": last_step, "last_record_ns": self.last_time_ns, "causes": causes}}

    def main_loss(self) -> str | None:
        keys = [k for k in self.state.metrics if k.rsplit("/", 1)[-1] == "loss"]
        return min(keys, key=lambda k: (k.count("/"), k)) if keys else None


def load_run(path: Path) -> Run:
    problems: list[str] = []
    events = list(read_events(path / EVENTS, problems))
    run = Run(path, events, problems)
    last_step: int | None = None
    for event in events:
        record = _record(event)
        run.state.apply(record)
        run.last_time_ns = max(run.last_time_ns, record.time_ns)
        kind = event["kind"]
        if kind == "experiment_start":
            run.start = event["data"]
        elif kind == "experiment_end":
            run.end = event["data"]
        elif kind == "training_step":
            last_step = event["step"] if event["step"] is not None else last_step
            split = event["data"].get("data_split")
            for key, value in (record.values or {}).items():
                name = metric_name(record, key, split)
                run.history.setdefault(name, []).append((event["step"], value))
        elif kind in ("scope_end", "phase"):
            name = event["scope"] if kind == "scope_end" else event["data"]["name"]
            run.timed.append(Timed(name, "scope" if kind == "scope_end" else "phase",
                                   float(event["data"].get("duration_s") or 0.0), last_step,
                                   event.get("trace_id"), event.get("span_id"), event["data"].get("error")))
    return run


def _record(event: dict[str, Any]) -> Record:
    scope = tuple(event["scope"].split("/")) if event.get("scope") else ()
    data = dict(event.get("data") or {})
    values = None
    if event["kind"] == "training_step":
        prefix = len(event["scope"]) + 1 if scope else 0
        values = {k[prefix:]: float(v) for k, v in data.pop("metrics", {}).items() if isinstance(v, (int, float))}
    return Record(event["kind"], int(event.get("time_unix_nano") or 0), event.get("step"), scope,
                  int(event["trace_id"], 16) if event.get("trace_id") else 0,
                  int(event["span_id"], 16) if event.get("span_id") else 0, data, values)


def run_folders(runs_dir: Path) -> list[Path]:
    if not runs_dir.is_dir():
        return []
    return sorted((p for p in runs_dir.iterdir() if (p / EVENTS).is_file()), key=lambda p: (p / EVENTS).stat().st_mtime)


def resolve_run(text: str, runs_dir: Path) -> Path:
    """A run folder from a path, a full id, or a unique id prefix."""
    candidate = Path(text)
    if (candidate / EVENTS).is_file():
        return candidate
    if candidate.name == EVENTS and candidate.is_file():
        return candidate.parent
    folders = run_folders(runs_dir)
    matches = [p for p in folders if p.name == text] or [p for p in folders if p.name.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    names = [p.name for p in folders]
    if not matches:
        close = difflib.get_close_matches(text, names, n=5, cutoff=0.3)
        hint = f" Close matches: {', '.join(close)}." if close else (
            f" Runs in {runs_dir}: {', '.join(names[-5:])}." if names else f" There are no runs in {runs_dir}.")
        raise RunNotFound(f"No run matches {text!r}.{hint}")
    raise RunNotFound(f"{text!r} is ambiguous: it matches {', '.join(p.name for p in matches[:8])}.")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def slow_table(run: Run) -> list[dict[str, Any]]:
    """Per scope/phase name: count, total, p50, p95, max; slowest first by total."""
    by_name: dict[tuple[str, str], list[float]] = {}
    for item in run.timed:
        by_name.setdefault((item.kind, item.name), []).append(item.duration_s)
    rows = [{"kind": kind, "name": name, "count": len(d), "total_s": sum(d), "p50_s": percentile(d, 0.5),
             "p95_s": percentile(d, 0.95), "max_s": max(d)} for (kind, name), d in by_name.items()]
    return sorted(rows, key=lambda row: row["total_s"], reverse=True)
