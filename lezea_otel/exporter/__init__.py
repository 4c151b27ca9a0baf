"""The exporter: audit records (``runs/<id>/events.jsonl``) -> OpenTelemetry data, delivered.

It reads what the trainer wrote and builds the spans, log records and metric points, with the trainer's
ids and each record's time, using public SDK data types only (the converting core below); the service
(``service``, ``assemble``) follows the audit beside the trainer, in a process of its own or a thread, and
delivers to the run's files, ``/metrics`` and a collector, with the observers' and its own delivery metrics.

- :class:`AuditCursor` follows one audit file from a persisted (byte offset, seq) position.
- :class:`RunConverter` turns that file's records into :class:`Batch`es (spans, log records) and,
  once per export interval, ``MetricsData``; :func:`merge_metrics` combines several files' metrics.

The trainer writes what the spans need exactly: ``parent_span_id`` on ``scope_start``, ``phase`` and a
worker's ``experiment_start``; a phase's own attributes (``data.attributes``); the exception as
``data.exception`` = {type, message, stacktrace}; the resolved ``data.resource`` in ``experiment_start``,
whose time is the root span's start (``experiment_end``'s its end). Older audits without them are still
exported: parents then follow the scope paths and the resource is derived from the start record.
"""

from __future__ import annotations

from lezea_otel.audit.record import Kind
from lezea_otel.exporter.convert import Batch, RunConverter, merge_metrics
from lezea_otel.exporter.cursor import AuditCursor, Position
from lezea_otel.exporter.metrics import MetricsBuilder
from lezea_otel.exporter.records import AuditRecord, run_resource
from lezea_otel.exporter.spans import SpanBuilder

__all__ = [
    "AuditCursor", "AuditRecord", "Batch", "Kind", "MetricsBuilder", "Position", "RunConverter",
    "SpanBuilder", "merge_metrics", "run_resource",
]
