"""Reading ``runs/<id>/events.jsonl`` back: each line a record, its non-finite numbers revived exactly where
the writer marked them (``"nonfinite"``), so a user's text "NaN" stays text; a torn or corrupt line is
skipped and named, never fatal (audits outlive the code that wrote them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from lezea_otel.audit.record import NONFINITE

_TEXT_FIELDS = frozenset((
    "text", "name", "purpose", "tags", "agent_id", "role", "data_split", "component_id", "component_type",
    "path", "version_tag", "algorithm_type", "start_network_id", "initialization_scheme", "status",
    "ended_by", "error", "sample_id", "experiment_id", "host", "service_name", "run_dir"))
"""Fields of ``data`` that every writer filled with text: never revived, even in a line without
``nonfinite``."""


def _revive_old(data: dict[str, Any]) -> dict[str, Any]:
    """A line written before the ``nonfinite`` list: "NaN"/"Infinity"/"-Infinity" text is a float, but in
    the fields that always held text."""
    return {k: v if k in _TEXT_FIELDS else _revive(v) for k, v in data.items()}


def _revive(value: Any) -> Any:
    if isinstance(value, str):
        return NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def _revive_at(data: Any, path: Any) -> None:
    """Turn the text at ``path`` (keys and list indices under ``data``) back into its float."""
    if not isinstance(path, list) or not path:
        return
    container = data
    for step in path[:-1]:
        container = _child(container, step)
    last = path[-1]
    if isinstance(_child(container, last), str):
        container[last] = NONFINITE.get(container[last], container[last])


def _child(container: Any, step: Any) -> Any:
    if isinstance(container, dict) and isinstance(step, str):
        return container.get(step)
    if isinstance(container, list) and type(step) is int and -len(container) <= step < len(container):
        return container[step]
    return None


def decode_line(raw: bytes) -> dict[str, Any] | str:
    """One audit line as a record, its non-finite numbers revived; else why it cannot be one."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "is not valid JSON (torn or corrupt)"
    if not isinstance(event, dict):
        return "is not a JSON object"
    if isinstance(event.get("data"), dict):
        marks = event.get("nonfinite")
        if isinstance(marks, list):
            for mark in marks:
                _revive_at(event["data"], mark)
        elif "nonfinite" not in event:
            event["data"] = _revive_old(event["data"])
    return event


def read_events(path: Path, problems: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every readable line of an audit file; a torn or corrupt line is skipped and reported."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            event = decode_line(raw)
            if isinstance(event, str):
                if problems is not None:
                    problems.append(f"{path}: line {number} {event}; skipped")
                continue
            yield event
