"""The exporter's pure core: audit records (``runs/<id>/events.jsonl``) -> OpenTelemetry data.

Not wired into the tracker yet (issue 12, "The exporter"): this package reads what the trainer
wrote and builds the spans, log records and metric points the in-process pipeline produces today,
with the trainer's ids and each record's time, using public SDK data types only. Nothing here
exports or starts a thread; the caller hands the output to any SDK exporter.

- :class:`AuditCursor` follows one audit file from a persisted (byte offset, seq) position.
- :class:`RunConverter` turns that file's records into :class:`Batch`es (spans, log records) and,
  once per export interval, ``MetricsData``; :func:`merge_metrics` combines several files' metrics.

What the audit does not hold yet (so the spans are exact only where it does; the trainer's next
slice adds these fields, and the builders already read them when present):

- ``parent_span_id`` (top level, hex) on ``scope_start``, ``phase`` and a worker's ``experiment_start``:
  without it a phase or scope inside a phase hangs under the enclosing scope, a worker's span is a
  root of its own.
- ``phase``: the user's span attributes (``data.attributes``); ``phase``/``scope_end``/``experiment_end``:
  the exception as ``data.exception`` = {type (module-qualified), message, stacktrace}.
- ``experiment_start``: the resolved ``data.resource`` (``service.instance.id``, ``OTEL_RESOURCE_ATTRIBUTES``,
  ranks, ``vcs.*``, runtime); its time must be the root span's start, ``experiment_end``'s its end.
"""

from __future__ import annotations

from .cursor import AuditCursor, Position
from .metrics import MetricsBuilder
from .records import AuditRecord, Kind, run_resource
from .run import Batch, RunConverter, merge_metrics
from .spans import SpanBuilder

__all__ = [
    "AuditCursor", "AuditRecord", "Batch", "Kind", "MetricsBuilder", "Position", "RunConverter",
    "SpanBuilder", "merge_metrics", "run_resource",
]
