"""Shared by the tests of ``tracker.watch`` and the framework integrations: a run's phases and values as
its audit holds them (every rank folder of it), and the models and data they train, small enough for a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lezea_otel.audit.reader import read_events

HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
"""Nothing is downloaded while the tests run: the models are built from configs in the tests."""


def audits(run: Path) -> list[Path]:
    """``events.jsonl`` of a run folder, its rank folders' too (rank 0 first)."""
    return sorted(run.rglob("events.jsonl"), key=lambda path: (len(path.parts), str(path)))


def events(run: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of every audit of ``run`` (a run folder or one ``events.jsonl``), of ``kind`` if given."""
    files = [run] if run.is_file() else audits(run)
    return [event for path in files for event in read_events(path) if kind is None or event["kind"] == kind]


def phase_names(run: Path, source: str | None = None) -> list[str]:
    """The phases in the order they ended; only those made by ``source`` (``lezea.phase.source``) if given."""
    return [e["data"]["name"] for e in events(run, "phase")
            if source is None or e["data"].get("attributes", {}).get("lezea.phase.source") == source]


def training_values(run: Path, split: str | None = None) -> dict[int, dict[str, float]]:
    """Step -> the values logged at it in ``split`` (None: the training split)."""
    found: dict[int, dict[str, float]] = {}
    for event in events(run, "training_step"):
        if event["data"].get("data_split") == split:
            found.setdefault(event["step"], {}).update(event["data"]["metrics"])
    return found


def end_status(run: Path) -> str:
    (end,) = [e for e in events(run if run.is_file() else audits(run)[0], "experiment_end")]
    return str(end["data"]["status"])
