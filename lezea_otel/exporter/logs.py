"""Event records -> ``ReadableLogRecord``s correlated with the span each call happened in.

The exporter's only module that imports the SDK's unstable ``_logs`` packages (being renamed to
``opentelemetry.sdk.logs`` upstream): a rename is one edit here (the others take the types from here).
Bodies, event names, severities and attributes are made from each record's kind and data; the
timestamp is the record's, and the trace context is the record's ids, never the exporter thread's
current context (which ``LogRecord`` would otherwise take).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordLimits, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags

from lezea_otel import semconv as names
from lezea_otel.audit.record import Kind
from lezea_otel.exporter.records import (
    SCOPE,
    AuditRecord,
)
from lezea_otel.util import values
from lezea_otel.util.safety import encodable_attributes, encodable_text

# the exporter takes log types from here
__all__ = ["LogBuilder", "LogRecordExporter", "ReadableLogRecord", "record_context", "succeeded"]


_Event = tuple[str, str, dict[str, Any], bool]
"""(event name, body, attributes, warning) of one log record."""


def succeeded(result: Any) -> bool:
    """Whether a log exporter's ``export()`` result means the batch was taken."""
    return bool(result == LogRecordExportResult.SUCCESS)


def record_context(record: AuditRecord) -> Context:
    """A context holding the record's span (SAMPLED, as in-process); an invalid span when it has none."""
    if record.trace_id and record.span_id:
        span = NonRecordingSpan(SpanContext(record.trace_id, record.span_id, is_remote=False,
                                            trace_flags=TraceFlags(TraceFlags.SAMPLED)))
        return trace.set_span_in_context(span)
    return trace.set_span_in_context(INVALID_SPAN)


class LogBuilder:
    """Turns each event record into its log record; records of other kinds give none."""

    def __init__(self, resource: Resource, constant_attributes: dict[str, Any],
                 scope: InstrumentationScope = SCOPE, limits: LogRecordLimits | None = None) -> None:
        self.resource = resource
        self.scope = scope
        self.limits = limits or LogRecordLimits()  # OTEL_LOGRECORD_ATTRIBUTE_*, as the SDK reads them
        self._constant = encodable_attributes(constant_attributes)
        self._events: dict[str, Callable[[dict[str, Any]], _Event | None]] = {
            Kind.EXPERIMENT_START: _started, Kind.ENVIRONMENT: _environment, Kind.EXPERIMENT_END: _finished,
            Kind.CONFIG: _config, Kind.MODIFICATION_TREE: _modification_tree, Kind.DATA_SPLITS: _data_splits,
            Kind.DATA_USAGE: _data_usage, Kind.DATA_SCORE: _data_score, Kind.CHECKPOINT: _checkpoint,
            Kind.DATASET_VERSION: _dataset, Kind.RESULTS: _results, Kind.RESOURCE_COST: _cost,
            Kind.COMMENT: _text_event(names.EVENT_COMMENT),
            Kind.CONCLUSION: _text_event(names.EVENT_CONCLUSION),
        }

    def feed(self, record: AuditRecord) -> list[ReadableLogRecord]:
        make = self._events.get(record.kind)
        event = make(record.data) if make is not None else None
        if event is None:
            return []
        name, body, attributes, warning = event
        extra: dict[str, Any] = {}
        if record.scope:
            extra[names.SCOPE_PATH] = record.scope
        if record.step is not None:
            extra[names.STEP] = record.step
        log = LogRecord(
            timestamp=record.time_ns, observed_timestamp=record.time_ns, context=record_context(record),
            severity_number=SeverityNumber.WARN if warning else SeverityNumber.INFO,
            severity_text="WARN" if warning else "INFO", body=encodable_text(body),
            attributes=BoundedAttributes(self.limits.max_attributes,
                                         {**self._constant, **encodable_attributes({**extra, **attributes})},
                                         immutable=True, max_value_len=self.limits.max_attribute_length),
            event_name=name)
        return [ReadableLogRecord(log, resource=self.resource, instrumentation_scope=self.scope)]


# --- one function per event kind: (event name, body, attributes, warning), as mapping.py emits them ---


def _started(data: dict[str, Any]) -> _Event:
    return (names.EVENT_STARTED, f"experiment {data.get('name')!r} started",
            values.flat_attributes({names.EXPERIMENT_PURPOSE: data.get("purpose"),
                                    names.EXPERIMENT_TAGS: data.get("tags")}), False)


def _environment(data: dict[str, Any]) -> _Event:
    return (names.EVENT_ENVIRONMENT, "environment", values.flat_attributes(data, names.ENVIRONMENT_PREFIX),
            False)


def _finished(data: dict[str, Any]) -> _Event:
    status = data.get("status")
    return (names.EVENT_FINISHED, f"experiment {status}",
            values.flat_attributes({names.RUN_STATUS: status, names.RUN_ENDED_BY: data.get("ended_by"),
                                    names.RUN_DURATION_S: data.get("duration_s"),
                                    names.SUMMARY: data.get("summary")}),
            status != "finished")


def _config(data: dict[str, Any]) -> _Event:
    return names.EVENT_CONFIG, "LeZeA configuration", values.flat_attributes(data, names.CONFIG_PREFIX), False


def _modification_tree(data: dict[str, Any]) -> _Event:
    modifications = data.get("modifications")
    statistics = data.get("statistics")
    count = len(modifications) if isinstance(modifications, list) else 0
    flat = values.flat_attributes(statistics if isinstance(statistics, dict) else {}, names.STATISTICS_PREFIX)
    return (names.EVENT_MODIFICATION_TREE, f"modification tree with {count} modifications",
            {names.MODIFICATIONS: values.json_text(modifications), **flat}, False)


def _data_splits(data: dict[str, Any]) -> _Event:
    return (names.EVENT_DATA_SPLITS, "data splits",
            {f"{names.DATA_PREFIX}.{split}.{key}": entry.get(key) for split, entry in data.items()
             if isinstance(entry, dict) for key in ("count", "sha256")}, False)


def _data_usage(data: dict[str, Any]) -> _Event:
    return (names.EVENT_DATA_USAGE, f"{data.get('count')} samples used",
            values.flat_attributes({names.EPOCH_ATTRIBUTE: data.get("epoch"),
                                    f"{names.DATA_PREFIX}.count": data.get("count"),
                                    f"{names.DATA_PREFIX}.sha256": data.get("sha256")}), False)


def _data_score(data: dict[str, Any]) -> _Event:
    return (names.EVENT_DATA_SCORE, f"sample {data.get('sample_id')} scored",
            values.flat_attributes({names.DATA_PREFIX: data}), False)


def _checkpoint(data: dict[str, Any]) -> _Event:
    return (names.EVENT_CHECKPOINT, f"checkpoint {data.get('path')}",
            values.flat_attributes({names.EVENT_CHECKPOINT: data}), False)


def _dataset(data: dict[str, Any]) -> _Event:
    return (names.EVENT_DATASET, f"dataset {data.get('name')} {data.get('version_tag') or ''}".strip(),
            values.flat_attributes({names.EVENT_DATASET: data}), False)


def _results(data: dict[str, Any]) -> _Event | None:
    if data.get("action_outputs") is None:
        return None
    outputs = values.json_text(data["action_outputs"])
    return names.EVENT_RESULTS, "action outputs", {names.ACTION_OUTPUTS: outputs}, False


def _cost(data: dict[str, Any]) -> _Event:
    return names.EVENT_COST, "resource cost", values.flat_attributes({names.EVENT_COST: data}), False


def _text_event(event_name: str) -> Callable[[dict[str, Any]], _Event | None]:
    def make(data: dict[str, Any]) -> _Event | None:
        text = data.get("text")
        return (event_name, text, {}, False) if isinstance(text, str) else None

    return make
