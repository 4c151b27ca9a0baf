"""Argument checking and shaping for the spec's less frequent calls.

Each function takes the user's arguments and a ``warn(problem, detail)`` bound to the call, and
returns the record data: every valid part is kept, every bad part is reported once and dropped.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from . import values
from .values import Warn

_MB = 2**20


def config(warn: Warn, tasker_population_size: Any, builder_population_size: Any, algorithm_type: Any,
           start_network_id: Any, hyperparameters: Any, seeds: Any, initialization_scheme: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, raw in (("tasker_population_size", tasker_population_size),
                      ("builder_population_size", builder_population_size)):
        if raw is None:
            continue
        number = values.number(raw, name, warn)
        if number is not None:
            data[name] = int(number) if number.is_integer() else number
    for name, raw in (("algorithm_type", algorithm_type), ("start_network_id", start_network_id),
                      ("initialization_scheme", initialization_scheme)):
        text = values.text(raw, name, warn, optional=True)
        if text is not None:
            data[name] = text
    for name, raw in (("hyperparameters", hyperparameters), ("seeds", seeds)):
        if raw is None:
            continue
        if not isinstance(raw, dict):
            warn(f"{name} must be a dict", f"got {values.describe(raw)}; ignored")
            continue
        data[name] = values.scrub(values.plain(raw, name, warn))
    return data


def statistics(warn: Warn, stats: Any, what: str = "statistics") -> dict[str, Any]:
    """Numbers are kept as floats (they become metrics); other values are kept as data only."""
    if stats is None:
        return {}
    if not isinstance(stats, dict):
        warn(f"{what} must be a dict", f"got {values.describe(stats)}; ignored")
        return {}
    out: dict[str, Any] = {}
    for key, value in stats.items():
        key = values.text_key(key, what, warn)
        number = values.as_number(value)
        out[key] = number if values.is_number(number) else values.plain(value, what, warn)
    return out


def modifications(warn: Warn, items: Any) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, dict):
        items = [items]
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        warn("modifications must be a list", f"got {values.describe(items)}; ignored")
        return []
    return values.plain(list(items), "modifications", warn)


def split(warn: Warn, name: str, ids: Any) -> dict[str, Any] | None:
    shaped = values.id_list(ids, name, warn)
    if shaped is None:
        return None
    kept, count, digest = shaped
    return {"count": count, "sha256": digest, "ids": kept, "truncated": count > len(kept)}


def data_score(warn: Warn, sample_id: Any, before_loss: Any, after_loss: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"sample_id": values.plain(sample_id, "sample_id", warn)}
    before = values.number(before_loss, "before_loss", warn) if before_loss is not None else None
    after = values.number(after_loss, "after_loss", warn) if after_loss is not None else None
    data.update(before_loss=before, after_loss=after)
    if before is not None and after is not None:
        data["score"] = before - after
    return data


def resource(warn: Warn, component_id: Any, component_type: Any, cpu_percent: Any, gpu_percent: Any,
             memory_mb: Any, io_operations: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "component_id": values.text(component_id, "component_id", warn) or "unknown",
        "component_type": values.text(component_type, "component_type", warn, optional=True),
    }
    for name, raw in (("cpu_percent", cpu_percent), ("gpu_percent", gpu_percent), ("memory_mb", memory_mb),
                      ("io_operations", io_operations)):
        if raw is not None:
            number = values.number(raw, name, warn)
            if number is not None and number < 0:
                warn(f"{name} is negative", f"got {number}; ignored")
                number = None
            data[name] = number
    return data


def checkpoint(warn: Warn, path: Any, hash_max_bytes: int, metadata: Any) -> dict[str, Any]:
    text = values.text(path, "path", warn) or ""
    data: dict[str, Any] = {"path": text, "exists": False, "size_bytes": None, "sha256": None}
    try:
        stat = os.stat(text)
    except (OSError, ValueError):
        warn("checkpoint file not found", f"{text!r}; recorded without size or hash")
    else:
        data.update(exists=True, size_bytes=stat.st_size)
        if os.path.isfile(text) and stat.st_size <= hash_max_bytes:
            data["sha256"] = _sha256(text)
    if metadata is not None:
        data["metadata"] = values.scrub(values.plain(metadata, "metadata", warn))
    return data


def dataset(warn: Warn, name: Any, version_tag: Any, dataset_path: Any, metadata: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": values.text(name, "dataset_name", warn) or "unknown",
        "version_tag": values.text(version_tag, "version_tag", warn, optional=True),
        "path": values.text(dataset_path, "dataset_path", warn, optional=True),
    }
    if data["path"] and os.path.exists(data["path"]):
        data["exists"] = True
    if metadata is not None:
        data["metadata"] = values.scrub(values.plain(metadata, "metadata", warn))
    return data


def rewards(warn: Warn, rewards_by_agent: Any, what: str) -> dict[str, float]:
    if rewards_by_agent is None:
        return {}
    return values.numbers(rewards_by_agent, what, warn)


def _sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_MB), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
