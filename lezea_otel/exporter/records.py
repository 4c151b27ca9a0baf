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
from lezea_otel.util.safety import encodable_attributes
from lezea_otel.version import __version__

# Keys the in-process code spells inline (mapping.py, spans.py, scope_calls.py; not in names.py yet):
# written once here for the exporter, to move into names.py when the trainer side is reshaped.
STAT_SOURCE: Final = "lezea.stat.source"
COMMENT_KIND: Final = "lezea.comment.kind"
RUN_DURATION_S: Final = "lezea.run.duration_s"
SUMMARY: Final = "lezea.summary"
ENVIRONMENT_PREFIX: Final = "lezea.environment."
MODIFICATIONS: Final = "lezea.modifications"
STATISTICS_PREFIX: Final = "lezea.statistics."
DATA_PREFIX: Final = "lezea.data"
EPOCH_ATTRIBUTE: Final = "lezea.epoch"
ACTION_OUTPUTS: Final = "lezea.action_outputs"
TRUNCATED_REASON: Final = "reason"
EXCEPTION_EVENT: Final = "exception"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
EXCEPTION_ESCAPED: Final = "exception.escaped"

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
        return cls(
            seq=seq, time_ns=time_ns, kind=kind,
            step=step if type(step) is int else None,
            scope=scope if type(scope) is str else "",
            trace_id=_hex_id(event.get("trace_id"), 32),
            span_id=_hex_id(event.get("span_id"), 16),
            data=data if isinstance(data, dict) else {},
            parent_span_id=_hex_id(event.get("parent_span_id"), 16) or None,
        )

    def metric_values(self) -> dict[str, Any]:
        """A training step's values under their unprefixed keys (the audit writes ``builder:42/loss``)."""
        metrics = self.data.get("metrics")
        if not isinstance(metrics, dict):
            return {}
        prefix = f"{self.scope}/" if self.scope else ""
        cut = len(prefix)
        return {(key[cut:] if prefix and key.startswith(prefix) else key): value
                for key, value in metrics.items() if isinstance(key, str)}


def is_worker(start: AuditRecord) -> bool:
    """Whether an ``experiment_start`` is a forked worker's (its audit lies under ``workers/<pid>/``)."""
    if start.data.get("worker") is True:
        return True
    run_dir = start.data.get("run_dir")
    return isinstance(run_dir, str) and Path(run_dir).parent.name == names.WORKERS_DIR


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
        return Resource({**sdk, **encodable_attributes(given)})
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
    return Resource({**sdk, **encodable_attributes(attributes)})


def constant_attributes(start: AuditRecord | None) -> dict[str, Any]:
    """Experiment id and name: on every metric point and log record, as in-process."""
    data = start.data if start is not None else {}
    return encodable_attributes({names.EXPERIMENT_ID: str(data.get("experiment_id") or ""),
                                 names.EXPERIMENT_NAME: str(data.get("name") or "")})
