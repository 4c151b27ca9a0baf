"""Argument checking and shaping for the spec's less frequent calls.

Each function takes the user's arguments and a ``warn(problem, detail)`` bound to the call, and
returns the record data: every valid part is kept, every bad part is reported once and dropped.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from lezea_otel.util import values
from lezea_otel.util.values import Warn

_MB = 2**20


def config(warn: Warn, tasker_population_size: Any, builder_population_size: Any, algorithm_type: Any,
           start_network_id: Any, hyperparameters: Any, seeds: Any,
           initialization_scheme: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, raw in (("tasker_population_size", tasker_population_size),
                      ("builder_population_size", builder_population_size)):
        if raw is not None:
            size = population(warn, name, raw)
            if size is not None:
                data[name] = size
    for name, raw in (("algorithm_type", algorithm_type), ("start_network_id", start_network_id),
                      ("initialization_scheme", initialization_scheme)):
        text = values.label(raw, name, warn, optional=True)
        if text is not None:
            data[name] = text
    for name, raw in (("hyperparameters", hyperparameters), ("seeds", seeds)):
        if raw is None:
            continue
        if not values.is_mapping(raw):
            warn(f"{name} must be a dict", f"got {values.describe(raw)}; ignored")
            continue
        data[name] = values.scrub(values.plain(raw, name, warn))
    return data


def population(warn: Warn, name: str, raw: Any) -> int | float | None:
    """A population size: a whole number >= 0; anything else is kept as given, with a warning."""
    measured = values.number(raw, name, warn)
    if measured is None or measured - measured != 0:
        return measured  # values.number has said so
    exact = values.scalar(raw)
    number: int | float = measured
    if type(exact) is int and values.INT64_MIN <= exact <= values.INT64_MAX:
        number = exact  # exact past 2**53 too
    elif measured.is_integer() and abs(measured) < 2**63:
        number = int(measured)
    if not float(number).is_integer():
        warn(f"{name} is not a whole number", f"got {values.describe(raw)}; recorded as given")
    elif number < 0:
        warn(f"{name} is negative", f"got {values.describe(raw)}; recorded as given")
    return number


def statistics(warn: Warn, stats: Any, what: str = "statistics", required: bool = False) -> dict[str, Any]:
    """Numbers are kept as floats (they become metrics); other values are kept as data only, with a
    warning. ``required``: the call has nothing else to record, so None is a mistake too."""
    if stats is None:
        if required:
            warn(f"{what} is None", "nothing recorded")
        return {}
    if not values.is_mapping(stats):
        warn(f"{what} must be a dict", f"got {values.describe(stats)}; ignored")
        return {}
    out: dict[str, Any] = {}
    for key, value in values.items_of(stats, what, warn):
        key = values.text_key(key, what, warn)
        number = values.to_float(value, f"{what}: value for {key!r}", warn)
        if values.is_number(number):
            out[key] = number
        else:  # one warning for the value: how it is kept (as its text, ...) is said in it
            notes: list[str] = []
            out[key] = values.plain(value, what, lambda _problem, detail: notes.append(detail))  # noqa: B023 - called at once
            warn(f"{what}: value for {key!r} is not a number", f"got {values.describe(value)}; kept in the "
                 "audit" + (f" ({notes[0]})" if notes else "") + ", no metric made of it")
    return out


def modifications(warn: Warn, items: Any) -> list[Any]:
    if items is None:
        return []
    if values.is_mapping(items):
        items = [items]
    if values.is_a(items, (str, bytes, bytearray)) or not values.iterable(items):
        warn("modifications must be a list", f"got {values.describe(items)}; ignored")
        return []
    shaped: list[Any] = values.plain(list(values.iterate(items, "modifications", warn)), "modifications",
                                     warn)
    return shaped


def split(warn: Warn, name: str, ids: Any) -> dict[str, Any] | None:
    shaped = values.id_list(ids, name, warn)
    if shaped is None:
        return None
    kept, count, digest = shaped
    return {"count": count, "sha256": digest, "ids": kept, "truncated": count > len(kept)}


def _noting(warn: Warn) -> tuple[Warn, list[str]]:
    """``warn``, and the problems it was told: a later check on the same value stays quiet after one (one
    warning for one bad value)."""
    told: list[str] = []

    def noting(problem: str, detail: str) -> None:
        told.append(problem)
        warn(problem, detail)

    return noting, told


def data_score(warn: Warn, sample_id: Any, before_loss: Any, after_loss: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"sample_id": values.identifier(sample_id, "sample_id", warn)}
    losses_warn, told = _noting(warn)
    before = values.number(before_loss, "before_loss", losses_warn) if before_loss is not None else None
    after = values.number(after_loss, "after_loss", losses_warn) if after_loss is not None else None
    data.update(before_loss=before, after_loss=after)
    if before is not None and after is not None:
        data["score"] = score = before - after
        # the SDK's histogram takes no negative value, and would drop it with no word of ours
        if score < 0 and not told:
            warn("score (before_loss - after_loss) is negative",
                 f"got {score:.6g}: the sample made the loss worse; kept in the audit, not in the "
                 "lezea.data.score histogram (histograms take no negative values)")
    return data


RESOURCE_FIELDS = ("cpu_percent", "gpu_percent", "memory_mb", "io_operations")


def resource(warn: Warn, component_id: Any, component_type: Any, cpu_percent: Any, gpu_percent: Any,
             memory_mb: Any, io_operations: Any,
             given: tuple[str, str, str, str] = (
                 "cpu_percent", "gpu_util_percent", "memory_mb", "io_operations"),
             ) -> dict[str, Any]:
    """``given`` names the parameters as the call spells them (``log_resource(cpu=...)`` says ``cpu``)."""
    data: dict[str, Any] = {
        "component_id": values.label(component_id, "component_id", warn) or "unknown",
        "component_type": values.label(component_type, "component_type", warn, optional=True),
    }
    for field, name, raw in zip(RESOURCE_FIELDS, given, (cpu_percent, gpu_percent, memory_mb, io_operations),
                                 strict=True):
        if raw is not None:
            data[field] = values.number(raw, name, warn, finite_nonnegative=True)
    return data


def checkpoint(warn: Warn, path: Any, hash_max_bytes: int, metadata: Any) -> dict[str, Any]:
    raw = _os_path(path)
    path_warn, told = _noting(warn)
    text = values.text(raw, "checkpoint_path", path_warn) or ""
    data: dict[str, Any] = {"path": text, "exists": False, "size_bytes": None, "sha256": None}
    where = raw if values.is_a(raw, str) else text  # the file system takes the name as the OS gave it
    try:
        stat = os.stat(where)
    except (OSError, ValueError):
        if not told:  # a path that is no path was warned about already
            warn("checkpoint file not found", f"{text!r}; recorded without size or hash")
    else:
        data.update(exists=True, size_bytes=stat.st_size)
        if os.path.isfile(where) and stat.st_size <= hash_max_bytes:
            data["sha256"] = _sha256(where)
    if metadata is not None:
        data["metadata"] = values.scrub(values.plain(metadata, "metadata", warn))
    return data


def dataset(warn: Warn, name: Any, version_tag: Any, dataset_path: Any, metadata: Any) -> dict[str, Any]:
    raw = _os_path(dataset_path)
    data: dict[str, Any] = {
        "name": values.label(name, "dataset_name", warn) or "unknown",
        "version_tag": values.label(version_tag, "version_tag", warn, optional=True),
        "path": values.text(raw, "dataset_path", warn, optional=True),
    }
    if data["path"] and os.path.exists(raw if values.is_a(raw, str) else data["path"]):
        data["exists"] = True
    if metadata is not None:
        data["metadata"] = values.scrub(values.plain(metadata, "metadata", warn))
    return data


def _os_path(path: Any) -> Any:
    """A ``pathlib.Path`` or bytes name as the ``str`` the OS uses; anything else unchanged."""
    try:
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        return os.fsdecode(path) if isinstance(path, bytes) else path
    except Exception:  # noqa: BLE001 - a __fspath__ that raises: values.text describes it
        return path


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
