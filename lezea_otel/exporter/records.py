"""Audit lines as typed records, and the run identity (OTel resource) they describe.

The exporter reads ``runs/<id>/events.jsonl`` written by another process, perhaps an older or a
crashed one: every field is checked here once, so the span, log and metric builders work on plain
typed values and never on raw JSON. A line that is not a record is skipped, never fatal.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from opentelemetry.sdk.resources import (
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    Resource,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.sdk.version import __version__ as _SDK_VERSION

from lezea_otel import semconv as names
from lezea_otel.util.readable import INT64_MAX, INT64_MIN
from lezea_otel.util.safety import encodable_attributes
from lezea_otel.version import __version__

SCOPE: Final = InstrumentationScope(names.INSTRUMENTATION_NAME, __version__)
"""The instrumentation scope of everything the exporter makes: the tracker's own, as in-process."""


def _hex_id(value: Any, digits: int) -> int:
    """A hex trace/span id as an int; 0 (no id) for anything that is not one."""
    if type(value) is not str or len(value) != digits:
        return 0
    try:
        return int(value, 16)
    except ValueError:
        return 0


_TRACE_IDS: dict[str, int] = {}
_PARENT_IDS: dict[str, int] = {}
_MAX_KNOWN_IDS = 4096


def _known_id(known: dict[str, int], value: Any, digits: int) -> int:
    """:func:`_hex_id` of an id that recurs (a run's trace id, a scope's id as its children's parent),
    remembered per text (up to a bound)."""
    if type(value) is not str:
        return 0
    parsed = known.get(value)
    if parsed is None:
        if len(known) >= _MAX_KNOWN_IDS:
            known.clear()
        parsed = known[value] = _hex_id(value, digits)
    return parsed


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit line. ``scope`` is the scope path as written (``builder:42/network:n1``); ``trace_id``
    and ``span_id`` are the span the call happened in (a scope's or phase's own span for its records).

    ``parent_span_id``: on a span's own start record (None in audits written before it existed).
    """

    seq: int
    time_ns: int
    kind: str
    step: int | None
    scope: str
    trace_id: int
    span_id: int
    data: dict[str, Any] = field(default_factory=dict)
    parent_span_id: int | None = None

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> AuditRecord | None:
        """The record of one decoded line, or None when the line lacks what every record has."""
        seq, time_ns, kind = event.get("seq"), event.get("time_unix_nano"), event.get("kind")
        if type(seq) is not int or type(time_ns) is not int or type(kind) is not str:
            return None
        step, scope, data = event.get("step"), event.get("scope"), event.get("data")
        return cls(  # positional: every record of a run goes through here
            seq, time_ns, kind,
            step if type(step) is int else None,
            scope if type(scope) is str else "",
            _known_id(_TRACE_IDS, event.get("trace_id"), 32),
            _hex_id(event.get("span_id"), 16),
            data if isinstance(data, dict) else {},
            _known_id(_PARENT_IDS, event.get("parent_span_id"), 16) or None,
        )

    def metric_values(self) -> dict[str, Any]:
        """A training step's values under their unprefixed keys (the audit writes ``builder:42/loss``)."""
        metrics = self.data.get("metrics")
        if not isinstance(metrics, dict):
            return {}
        if not self.scope:
            return {key: value for key, value in metrics.items() if isinstance(key, str)}
        prefix = f"{self.scope}/"
        cut = len(prefix)
        return {(key[cut:] if key.startswith(prefix) else key): value
                for key, value in metrics.items() if isinstance(key, str)}


def plain_attributes(attributes: dict[str, Any], maxlen: int | None,
                     max_value_len: int | None) -> dict[str, Any] | None:
    """``attributes`` as they are when neither ``encodable_attributes`` nor a ``BoundedAttributes`` of
    these limits would change a thing: at most ``maxlen`` pairs, every key non-empty ASCII text, every
    value ASCII text (within ``max_value_len``), a bool, a float or an int64. Else None.

    A span's attributes are read through a read-only view whatever the mapping is (and a plain one
    drops nothing), so the span builder hands such a dict over as it is: the common phase or scope
    span then costs one pass over its attributes instead of the two cleanings."""
    if maxlen is not None and len(attributes) > maxlen:
        return None
    for key, value in attributes.items():
        if type(key) is not str or not key or not key.isascii():
            return None
        kind = type(value)
        if kind is str:
            if not value.isascii() or (max_value_len is not None and len(value) > max_value_len):
                return None
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                return None
        elif kind is not float and kind is not bool:
            return None
    return attributes


def is_worker(start: AuditRecord) -> bool:
    """Whether an ``experiment_start`` is a forked worker's (its audit lies under ``workers/<pid>/``)."""
    if start.data.get("worker") is True:
        return True
    run_dir = start.data.get("run_dir")
    return isinstance(run_dir, str) and Path(run_dir).parent.name == names.WORKERS_DIR


def rank_of(start: AuditRecord) -> int | None:
    """The rank of a distributed run that wrote an ``experiment_start`` (``None``: no rank, or unknown)."""
    launch = start.data.get("launch")
    rank = launch.get("rank") if isinstance(launch, dict) else None
    return rank if type(rank) is int and rank >= 0 else None


class RunResource(Resource):
    """A ``Resource`` whose hash is computed once: the OTLP encoders group every span and log record by
    its resource, and ``Resource.__hash__`` dumps all the attributes as JSON at each call. Equal to, and
    hashing as, the plain ``Resource`` of the same attributes (its attributes are immutable)."""

    def __init__(self, attributes: Mapping[str, Any], schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._lezea_hash = Resource.__hash__(self)

    def __hash__(self) -> int:
        return self._lezea_hash


def run_resource(start: AuditRecord) -> Resource:
    """The OTel resource of the process that wrote ``start`` (an ``experiment_start`` record).

    A ``resource`` mapping in the record (what the trainer resolved) is used as written. Without one
    (today's trainer), it is derived from the record; ``service.instance.id`` is then a stable UUID of
    (experiment id, pid), so every export of the same audit has the same identity. Built once per run:
    the encoders hash it per span or log record.
    """
    data = start.data
    given = data.get("resource")
    sdk = {TELEMETRY_SDK_LANGUAGE: "python", TELEMETRY_SDK_NAME: "opentelemetry",
           TELEMETRY_SDK_VERSION: _SDK_VERSION}
    if isinstance(given, dict) and given:
        return RunResource({**sdk, **encodable_attributes(given)})
    experiment_id = str(data.get("experiment_id") or "")
    pid = data.get("pid")
    attributes: dict[str, Any] = {
        names.SERVICE_NAME: str(data.get("service_name") or names.DEFAULT_SERVICE_NAME),
        names.SERVICE_VERSION: __version__,
        names.SERVICE_INSTANCE_ID: str(uuid.uuid5(uuid.NAMESPACE_URL, f"lezea:{experiment_id}:{pid}")),
        names.EXPERIMENT_ID: experiment_id,
        names.EXPERIMENT_NAME: str(data.get("name") or ""),
        names.EXPERIMENT_PURPOSE: str(data.get("purpose") or ""),
        names.EXPERIMENT_TAGS: [str(tag) for tag in data.get("tags") or [] if isinstance(tag, str)],
    }
    if isinstance(data.get("host"), str):
        attributes[names.HOST_NAME] = data["host"]
    if type(pid) is int:
        attributes[names.PROCESS_PID] = pid
    return RunResource({**sdk, **encodable_attributes(attributes)})


def constant_attributes(start: AuditRecord | None) -> dict[str, Any]:
    """Experiment id and name, and a distributed run's rank: on every metric point and log record, so a
    dashboard splits or compares ranks (``by (dl_rank)``) without joining ``target_info``."""
    data = start.data if start is not None else {}
    rank = rank_of(start) if start is not None else None
    return encodable_attributes({names.EXPERIMENT_ID: str(data.get("experiment_id") or ""),
                                 names.EXPERIMENT_NAME: str(data.get("name") or ""),
                                 **({names.DL_RANK: rank} if rank is not None else {})})


def resource_constants(resource: Resource) -> dict[str, Any]:
    """:func:`constant_attributes` as the trainer's resource holds them: for the metrics the exporter makes
    without a record (the observers', the delivery metrics)."""
    attributes = resource.attributes
    return {names.EXPERIMENT_ID: attributes.get(names.EXPERIMENT_ID, ""),
            names.EXPERIMENT_NAME: attributes.get(names.EXPERIMENT_NAME, ""),
            **({names.DL_RANK: attributes[names.DL_RANK]} if names.DL_RANK in attributes else {})}
