"""An audit's lines as a reader can trust them, and what forked workers add to their run.

Every reader (the CLI, the report, the trainer folding its workers in at finalize) goes through
:func:`events_of`: each line checked and cleaned (:func:`clean_event`, a line no writer of ours produced
is named and left out), then made a :class:`~lezea_otel.audit.record.Record` again (:func:`record_of`)
for the same ``RunState`` the tracker keeps.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lezea_otel.audit.reader import read_events
from lezea_otel.audit.record import Kind, Record
from lezea_otel.model.run_state import RunState

WORKER_OWN = frozenset({Kind.EXPERIMENT_START, Kind.EXPERIMENT_END, Kind.ENVIRONMENT, Kind.RESOURCE_TOTALS})
"""A worker's records about the worker itself (its fork, its exit, its observers): not the run's."""


def fold_workers(state: RunState, audits: list[Path]) -> None:
    """The forked workers' records into the run state of their run's live process (at finalize), by the
    rules of ``analysis.runs.load_run``: their records about themselves left out, their steps counted
    apart."""
    problems: list[str] = []
    for audit in audits:
        state.workers["count"] += 1
        for event in events_of(audit, problems):
            if event["kind"] in WORKER_OWN:
                continue
            steps, splits = state.steps, dict(state.split_steps)
            try:
                state.apply(record_of(event))
            except Exception:  # noqa: BLE001 - a line the state cannot take costs itself (load_run names it)
                state.steps, state.split_steps = steps, splits
                continue
            if event["kind"] == Kind.TRAINING_STEP:  # a worker's values count, its calls are not steps
                state.steps, state.split_steps = steps, splits
                state.workers["steps"] += 1


def has_ended(audit: Path) -> bool:
    """Whether the last whole line of ``audit`` is its ``experiment_end`` record."""
    try:
        with open(audit, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 65536))
            tail = handle.read()
    except OSError:
        return False
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    return tail.endswith(b"\n") and b'"kind":"experiment_end"' in lines[-1]


def events_of(audit: Path, problems: list[str]) -> list[dict[str, Any]]:
    return [e for e in (clean_event(raw, audit, problems) for raw in read_events(audit, problems)) if e]


_NUMBERS: dict[str, tuple[str, ...]] = {
    Kind.REWARD: ("reward",), Kind.DELTA_LOSS: ("loss", "prev_loss", "delta_loss"),
    Kind.DATA_SCORE: ("before_loss", "after_loss", "score"), Kind.SCOPE_END: ("duration_s",),
    Kind.PHASE: ("duration_s",), Kind.EXPERIMENT_END: ("duration_s",),
    Kind.RESOURCE: ("cpu_percent", "gpu_percent", "memory_mb", "io_operations")}
"""Fields the run state adds up: anything but a number there (an old audit wrote ``"np.float64(0.7)"``)
is dropped."""
_NUMBER_MAPS: dict[str, tuple[str, ...]] = {
    Kind.TRAINING_STEP: ("metrics",), Kind.BUSINESS_METRICS: ("metrics",),
    Kind.RESULTS: ("result_dict", "tasker_rewards", "builder_rewards")}
_TEXT: dict[str, tuple[str, ...]] = {
    Kind.EXPERIMENT_START: ("experiment_id", "name", "purpose", "host", "service_name", "run_dir"),
    Kind.EXPERIMENT_END: ("status", "ended_by", "error"), Kind.REWARD: ("agent_id", "role"),
    Kind.RESOURCE: ("component_id", "component_type"), Kind.PHASE: ("name", "error"),
    Kind.SCOPE_END: ("error",), Kind.COMMENT: ("text",), Kind.CONCLUSION: ("text",),
    Kind.TRAINING_STEP: ("data_split",)}
_REQUIRED: dict[str, str] = {
    Kind.REWARD: "reward", Kind.RESOURCE: "component_id", Kind.PHASE: "name", Kind.COMMENT: "text",
    Kind.CONCLUSION: "text", Kind.EXPERIMENT_END: "status", Kind.DATA_USAGE: "count"}


def clean_event(event: dict[str, Any], audit: Path, problems: list[str]) -> dict[str, Any] | None:
    """The event with every field the readers use of the type they expect; None when it cannot be used."""
    kind = event.get("kind")
    if not isinstance(kind, str):
        problems.append(f"{audit}: a line without a kind (seq {event.get('seq')!r}); skipped")
        return None
    data = event["data"] = dict(event["data"]) if isinstance(event.get("data"), dict) else {}
    step = event.get("step")
    event["step"] = step if type(step) is int else None
    event["scope"] = event["scope"] if isinstance(event.get("scope"), str) else ""
    event["time_unix_nano"] = event["time_unix_nano"] if type(event.get("time_unix_nano")) is int else 0
    for name in ("trace_id", "span_id"):
        event[name] = event.get(name) if _hex(event.get(name)) else None
    for name in _NUMBERS.get(kind, ()):
        if name in data:
            data[name] = _number(data[name])
    for name in _NUMBER_MAPS.get(kind, ()):
        if name in data:
            mapping = data[name] if isinstance(data[name], dict) else {}
            data[name] = {k: v for k, v in ((k, _number(v)) for k, v in mapping.items()) if v is not None}
    for name in _TEXT.get(kind, ()):
        if data.get(name) is not None and not isinstance(data[name], str):
            data[name] = str(data[name])
    if kind == Kind.EXPERIMENT_START:
        for name in ("tags", "targets"):
            data[name] = [str(item) for item in data[name]] if isinstance(data.get(name), list) else []
    elif kind == Kind.DATA_USAGE:
        data["count"] = data.get("count") if type(data.get("count")) is int else None
    elif kind == Kind.DATA_SPLITS:
        event["data"] = data = {split: entry for split, entry in data.items()
                                if isinstance(entry, dict) and type(entry.get("count")) is int}
    required = _REQUIRED.get(kind)
    if required is not None and data.get(required) is None:
        problems.append(f"{audit}: seq {event.get('seq')!r}: a {kind} record without a usable {required}; "
                        "left out of the summary")
        return None
    return event


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


def _hex(value: Any) -> bool:
    try:
        int(value, 16)
    except (TypeError, ValueError):
        return False
    return True


def record_of(event: dict[str, Any]) -> Record:
    scope = tuple(event["scope"].split("/")) if event["scope"] else ()
    data = dict(event["data"])
    values = None
    if event["kind"] == Kind.TRAINING_STEP:
        prefix = len(event["scope"]) + 1 if scope else 0
        values = {k[prefix:]: v for k, v in data.pop("metrics", {}).items()}
    return Record(event["kind"], event["time_unix_nano"], event["step"], scope,
                  int(event["trace_id"], 16) if event["trace_id"] else 0,
                  int(event["span_id"], 16) if event["span_id"] else 0, data, values)
