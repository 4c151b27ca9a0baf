"""Reading runs back from their folders: what the CLI and the report show, with no backend.

A run is rebuilt by replaying its ``events.jsonl`` through the same ``RunState`` the tracker used,
so ``lezea-otel show`` and ``get_experiment_summary()`` agree by construction (but for what forked
workers logged: their audits are folded in here, see ``load_run``). A distributed run's ranks are each
such a run; ``analysis.experiment`` merges them.
"""

from __future__ import annotations

import difflib
import heapq
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lezea_otel import semconv as names
from lezea_otel.analysis.attribution import PhaseSpan, StepCall, attribute
from lezea_otel.audit.record import Kind
from lezea_otel.model.audit_events import WORKER_OWN, events_of, record_of
from lezea_otel.model.layout import MemberFolder, has_audit, members, worker_audits
from lezea_otel.model.recommendations import recommend
from lezea_otel.model.run_state import RunState, merge_measured, metric_name
from lezea_otel.util.environment import host_name

EVENTS = names.AUDIT_FILE


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
    worker: int | None = None
    """The forked worker (its pid) that timed it; ``None``: the process itself."""
    end_ns: int = 0
    """When it ended (its record's time); it started ``duration_s`` before."""
    scope: str = ""
    """The scope path it ran in (a scope: its own path)."""
    gpu_duration_s: float | None = None
    """A phase's GPU time (CUDA events on its stream), where it was measured."""

    @property
    def start_ns(self) -> int:
        return self.end_ns - int(self.duration_s * 1e9)


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
    exporter: dict[str, Any] = field(default_factory=dict)
    """The exporter's report (``exporter/report.json``): what it measured (observers, per-scope resources)."""
    workers: list[Path] = field(default_factory=list)
    """The folders of the forked workers whose audits were folded into this run."""
    worker_steps: int = 0
    """Training step records the workers wrote (their values are in the metrics; not steps of the run)."""
    first_step_at: tuple[int, int | None] | None = None
    """(time, step) of the process's own first training step record; ``last_step_at`` the last."""
    last_step_at: tuple[int, int | None] | None = None
    after_end: int = 0
    """Calls made after finalize: in the audit (``events``), not in the answer, as finalize returned it."""

    @property
    def launch(self) -> dict[str, Any]:
        """The launch facts of the start record (rank, world size, node rank...); {} for an older run."""
        launch = self.start.get("launch")
        return launch if isinstance(launch, dict) else {}

    @property
    def step_rate(self) -> float | None:
        """Training steps per second of the process: step numbers advanced between its first and last step
        record (records counted where the numbers do not advance); ``None`` with no time between two."""
        if self.first_step_at is None or self.last_step_at is None:
            return None
        (first_ns, first), (last_ns, last) = self.first_step_at, self.last_step_at
        if last_ns <= first_ns:
            return None
        advanced = last - first if first is not None and last is not None and last > first else 0
        return (advanced or max(0, self.state.steps - 1)) / ((last_ns - first_ns) / 1e9)

    @property
    def id(self) -> str:
        ident = self.start.get("experiment_id")  # text or None once cleaned (a null in an odd audit)
        return ident if isinstance(ident, str) else self.path.name

    @property
    def status(self) -> str:
        """finished/failed/abandoned from the end record; otherwise running, or crashed when its process is
        gone; ``not started`` when its audit holds no record."""
        if self.end is not None:
            status: str = self.end.get("status", "finished")  # cleaned: a required text
            return status
        if not self.events:
            return names.STATUS_NOT_STARTED
        pid, host = self.start.get("pid"), self.start.get("host")
        if pid and host == host_name():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return "crashed"
            except PermissionError:
                return "running"
            except (OverflowError, TypeError, ValueError, OSError):  # a pid no process can have
                return "unknown"
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
        merge_measured(summary, self.exporter)
        summary["duration_s"] = self.duration_s
        summary["status"] = self.status
        summary["cost"]["total_eur"] = self.state.total_cost_eur()
        return summary

    def recommendations(self, cost_limit_eur: float | None = None) -> list[dict[str, Any]]:
        advice = recommend(self.state, cost_limit_eur, self.duration_s)
        if self.status == "crashed":
            advice.insert(0, self.crash_cause())
        return advice

    def crash_cause(self) -> dict[str, Any]:
        """Why a run died without a word, when its record shows a likely reason."""
        last_step = self.state.last_step
        causes = []
        loss = self.main_loss()
        if loss and self.history.get(loss) and not math.isfinite(self.history[loss][-1][1]):
            causes.append(f"{loss} was {self.history[loss][-1][1]} at its last step (diverged)")
        memory = [e["data"]["memory_mb"] for e in self.events
                  if e["kind"] == Kind.RESOURCE and isinstance(e["data"].get("memory_mb"), (int, float))][-4:]
        if len(memory) >= 3 and all(b > a for a, b in zip(memory, memory[1:], strict=False)):
            causes.append(f"memory kept growing ({', '.join(f'{m:.0f}' for m in memory)} MB): likely "
                          "killed by the OOM killer")
        reason = ("; ".join(causes) if causes
                  else "no cause in the record (kill -9, node loss or OOM are the usual ones)")
        return {"rule": "crashed", "severity": "critical",
                "message": f"The run stopped without an end record after step {last_step}: {reason}.",
                "evidence": {"last_step": last_step, "last_record_ns": self.last_time_ns, "causes": causes}}

    def main_loss(self) -> str | None:
        """The headline metric's name (``RunState.headline``): the training loss logged last across scopes,
        or the first key ``define_metric`` declared; ``None`` when the run has neither."""
        head = self.state.headline()
        return head.name if head is not None else None


def load_run(path: Path) -> Run:
    """Replay the audit; a line the run state cannot take (an old or hand-edited one) is skipped and named.

    ``path`` is one process's run folder; an experiment folder whose audits are all in rank or attempt
    folders opens its headline member (the lowest rank, its latest attempt; ``analysis.experiment`` opens
    them all). The audits of the process's forked workers (``workers/<pid>/``, and theirs) are replayed
    into the same run state, merged with the process's own records by time: their values, phases, scopes,
    rewards and resources are the run's. Their records about themselves (start, end, environment,
    observer totals) are left out. A worker's training step adds its values to the metrics (every value
    counted, in ``history`` too) and may extend the first/last step, but it is not a step of the run:
    ``steps.count`` is what the training loop itself logged (a DataLoader worker reporting on step 7 is
    no eighth step), and the workers' step records are counted apart, ``summary()["workers"]["steps"]``."""
    if not has_audit(path):
        folders = members(path)
        if folders:
            path = headline(folders).path
    problems: list[str] = []
    audits = worker_audits(path)
    files = [path / EVENTS, *audits]
    streams = [events_of(audit, problems) for audit in files]
    run = Run(path, [], problems, workers=[audit.parent for audit in audits])
    run.state.workers["count"] = len(audits)
    pids = [None, *(int(a.parent.name) if a.parent.name.isdigit() else None for a in audits)]
    last_step: int | None = None
    phases: list[PhaseSpan] = []
    calls: list[StepCall] = []
    merged = heapq.merge(*([(source, e) for e in events] for source, events in enumerate(streams)),
                         key=lambda item: item[1]["time_unix_nano"])
    for source, event in merged:
        kind, worker = event["kind"], source > 0
        if worker and kind in WORKER_OWN:
            continue
        if run.end is not None and not worker:  # a call after finalize: the audit only (README)
            run.after_end += 1
            continue
        run.events.append(event)
        record = record_of(event)
        steps, splits = run.state.steps, dict(run.state.split_steps)
        try:
            run.state.apply(record)
        except Exception as error:  # noqa: BLE001 - a shape no writer of ours produced: named, not fatal
            problems.append(f"{files[source]}: seq {event.get('seq')!r}: the {kind} record could "
                            f"not be read ({type(error).__name__}: {error}); left out of the summary")
            run.state.steps, run.state.split_steps = steps, splits
            continue
        run.last_time_ns = max(run.last_time_ns, record.time_ns)
        if kind == Kind.EXPERIMENT_START:
            run.start = event["data"]
        elif kind == Kind.EXPERIMENT_END:
            run.end = event["data"]
        elif kind == Kind.TRAINING_STEP:
            if worker:
                run.state.steps, run.worker_steps = steps, run.worker_steps + 1
                run.state.split_steps = splits
                run.state.workers["steps"] = run.worker_steps
            else:
                last_step = event["step"] if event["step"] is not None else last_step
                run.last_step_at = (record.time_ns, event["step"])
                run.first_step_at = run.first_step_at or run.last_step_at
            split = event["data"].get("data_split")
            for key, value in (record.values or {}).items():
                name = metric_name(record, key, split)
                run.history.setdefault(name, []).append((event["step"], value))
        elif kind in (Kind.SCOPE_END, Kind.PHASE):
            name = event["scope"] if kind == Kind.SCOPE_END else event["data"]["name"]
            gpu = event["data"].get("gpu_duration_s")
            run.timed.append(Timed(name, "scope" if kind == Kind.SCOPE_END else "phase",
                                   event["data"].get("duration_s") or 0.0, last_step,
                                   event.get("trace_id"), event.get("span_id"), event["data"].get("error"),
                                   pids[source], record.time_ns, event["scope"],
                                   float(gpu) if isinstance(gpu, (int, float)) else None))
            if kind == Kind.PHASE:
                phases.append(PhaseSpan(len(run.timed) - 1, (pids[source], event["scope"]), name,
                                        run.timed[-1].start_ns, record.time_ns))
        if kind == Kind.TRAINING_STEP and not worker and isinstance(event["step"], int) \
                and (event["data"].get("data_split") or "train") == "train":
            calls.append(StepCall(record.time_ns, event["scope"], event["step"]))
    for index, step in attribute(phases, calls).items():
        run.timed[index].step = step
    run.exporter = exporter_report(path)
    return run


def headline(folders: list[MemberFolder]) -> MemberFolder:
    """The member an experiment is summed up by: the lowest rank (a lone run before any rank), its latest
    attempt."""
    first = folders[0].rank
    return max((f for f in folders if f.rank == first), key=lambda f: f.attempt)


def exporter_report(run_dir: Path) -> dict[str, Any]:
    """The exporter's report of a run, {} when there is none (an audit-only run, an older one)."""
    try:
        report = orjson.loads((run_dir / names.EXPORTER_DIR / names.EXPORTER_REPORT_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return report if isinstance(report, dict) else {}


def run_folders(runs_dir: Path) -> list[Path]:
    """The experiment folders in ``runs_dir`` (an audit of their own, or in rank/attempt folders), the one
    written to last at the end; ``runs_dir`` itself when it is one experiment's folder."""
    if not runs_dir.is_dir():
        return []
    if members(runs_dir):
        return [runs_dir]
    found = []
    for path in runs_dir.iterdir():
        mtimes = []
        for member in members(path):
            try:
                mtimes.append((member.path / EVENTS).stat().st_mtime)
            except OSError:
                continue
        if mtimes:
            found.append((max(mtimes), path))
    return [path for _, path in sorted(found)]


def resolve_run(text: str, runs_dir: Path) -> Path:
    """A run folder from a path, a full id, or a unique id prefix: an experiment's folder (all of its ranks
    and attempts), or, given as a path, one rank's or attempt's folder (that member alone)."""
    candidate = Path(text)
    if candidate.name == EVENTS and candidate.is_file():
        return candidate.parent
    if has_audit(candidate) or members(candidate):
        return candidate
    folders = run_folders(runs_dir)
    matches = [p for p in folders if p.name == text] or [p for p in folders if p.name.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    names = [p.name for p in folders]
    if not matches:
        close = difflib.get_close_matches(text, names, n=5, cutoff=0.3)
        hint = f" Close matches: {', '.join(close)}." if close else (
            f" Runs in {runs_dir}: {', '.join(names[-5:])}." if names
            else f" There are no runs in {runs_dir}.")
        raise RunNotFound(f"No run matches {text!r}.{hint}")
    raise RunNotFound(f"{text!r} is ambiguous: it matches {', '.join(p.name for p in matches[:8])}.")
