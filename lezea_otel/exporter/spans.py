"""Experiment, scope and phase records -> finished ``ReadableSpan``s with the trainer's ids and times.

The trainer assigns the ids and takes the times; this module only puts them together, so a span
made from the audit is the span the trainer's records name: logs and exemplars that point at it
resolve. ``ReadableSpan`` is built directly (its public constructor, as the SDK's own span ends into one):
cheap, deterministic, and with no sampler, processor or live span object between the record and the
exporter.

What each record gives today (and what it does not: see the package docstring):

- ``experiment_start`` opens the root (``experiment``, or ``worker`` in a forked worker's audit) at the
  record's time, with its ids; ``config`` adds ``lezea.config.*`` to it; ``experiment_end`` ends it.
  The ``experiment.started`` marker span has no id in the audit: it gets one derived from the root's.
- ``scope_start`` carries the scope's own span id and start time; ``scope_end`` its end time.
- ``phase`` is written once, at exit, with the phase's own span id: start = end - ``duration_s``
  (exact to the nanosecond for phases shorter than about a month).
- Parents: ``parent_span_id`` when the record has one; otherwise the innermost open scope of the
  enclosing scope path (the root at top level). That is exact except for a phase or scope whose
  parent is a phase: it is attached to the enclosing scope instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from lezea_otel import semconv as names
from lezea_otel.audit.record import Kind
from lezea_otel.exporter.records import (
    SCOPE,
    AuditRecord,
    is_worker,
    plain_attributes,
    rank_of,
)
from lezea_otel.util import values
from lezea_otel.util.safety import encodable_attributes, encodable_text

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)  # a parent without it turns SDK children into non-recording spans
_UNSET = Status(StatusCode.UNSET)  # immutable: one for every span without an error, as the SDK's default
_INTERNAL = SpanKind.INTERNAL
# The kinds the dispatch meets most, as plain text: looking an enum member up costs more than comparing.
_PHASE, _SCOPE_START, _SCOPE_END, _TRAINING_STEP = (
    Kind.PHASE.value, Kind.SCOPE_START.value, Kind.SCOPE_END.value, Kind.TRAINING_STEP.value)


@dataclass(slots=True)
class OpenSpan:
    """A span whose start record was read and whose end record was not (yet)."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    path: str
    """The scope path the span belongs to (a scope's own path includes itself)."""
    attributes: dict[str, Any] = field(default_factory=dict)
    is_scope: bool = False
    window: tuple[str, str] | None = None
    """Where its resource summary is folded (``("scopes", path)``, ``("phases", name)``), when measured."""
    steps_at_start: int = 0
    markers: int = 0
    last_marker_ns: int = 0


def _nanoseconds(seconds: Any) -> int | None:
    """``duration_s`` back to the nanoseconds the trainer measured (it wrote ``ns / 1e9``)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e12:
        return None
    return round(seconds * 1e9)


def derived_span_id(trace_id: int, span_id: int, label: str) -> int:
    """A stable span id for a span the audit names no id for (the same on every export of a run)."""
    digest = hashlib.blake2b(f"{trace_id:032x}{span_id:016x}{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class Windows(Protocol):
    """Per-span resource summaries measured beside the records (``observe.ScopeWindows``)."""

    def open(self, span_id: int, level: str, start_ns: int) -> None: ...

    def close(self, span_id: int, end_ns: int, key: tuple[str, str]) -> Mapping[str, Any]: ...


class SpanBuilder:
    """Feeds on one audit's records in order; :meth:`feed` returns the spans each record finishes."""

    def __init__(self, resource: Resource, scope: InstrumentationScope = SCOPE,
                 limits: SpanLimits | None = None, windows: Windows | None = None) -> None:
        """``limits``: the SDK's span limits, from ``OTEL_SPAN_ATTRIBUTE_*`` as the SDK itself reads them.
        ``windows``: scope and phase spans get the resource summary measured for them (live export only:
        an audit written in-process carries its own in ``data.resources``, which wins)."""
        self.resource = resource
        self.windows = windows
        self.scope = scope
        self.limits = limits or SpanLimits()
        self.root: OpenSpan | None = None
        self.open: dict[int, OpenSpan] = {}
        """Scopes open now, by span id, in start order."""
        self.experiment_id = ""
        self.without_ids = 0
        """Span records with no trace/span id (an audit written with the SDK disabled): no span."""
        self._root_ended = False
        self.steps = 0
        """Training steps read so far (a progress marker says how many happened inside its scope)."""

    def feed(self, record: AuditRecord) -> list[ReadableSpan]:
        kind = record.kind
        if kind == _PHASE:
            return self._phase(record)
        if kind == _SCOPE_START:
            self._scope_start(record)
        elif kind == _SCOPE_END:
            return self._scope_end(record)
        elif kind == _TRAINING_STEP:
            self.steps += 1
        elif kind == Kind.CONFIG:
            if self.root is not None and not self._root_ended:
                self.root.attributes.update(values.flat_attributes(record.data, names.CONFIG_PREFIX))
        elif kind == Kind.EXPERIMENT_START:
            return self._experiment_start(record)
        elif kind == Kind.EXPERIMENT_END:
            data = record.data
            return self.end_run(record.time_ns, str(data.get("status") or "finished"),
                                str(data.get("ended_by") or ""), data)
        return []

    def end_run(self, end_ns: int, status: str, ended_by: str,
                data: Mapping[str, Any] | None = None) -> list[ReadableSpan]:
        """End every open scope as truncated by ``ended_by`` (innermost first), then the root.

        What ``experiment_end`` does, and what a crashed run needs (status ``crashed``, the last
        record's time) when the trainer is gone without one.
        """
        finished = self.truncate_open(end_ns, ended_by)
        root = self.root
        if root is not None and not self._root_ended:
            self._root_ended = True
            root.attributes.update({names.RUN_STATUS: status, names.RUN_ENDED_BY: ended_by})
            finished.append(self._finish(root, end_ns, data or {}))
        return finished

    def truncate_open(self, end_ns: int, reason: str) -> list[ReadableSpan]:
        """Every open scope ended at ``end_ns``, marked truncated (a crash, or a lost end record)."""
        spans = sorted(self.open.values(), key=lambda span: span.start_ns, reverse=True)
        self.open.clear()
        return [self._finish(span, max(end_ns, span.start_ns), {"truncated": reason}) for span in spans]

    def progress(self, now_ns: int, after_ns: int, every_ns: int) -> list[ReadableSpan]:
        """A ``lezea.progress`` marker under each scope open longer than ``after_ns``, every ``every_ns``:
        a span is exported only when it ends, so an hour-long scope would be invisible for an hour."""
        markers = []
        for span in self.open.values():
            elapsed = now_ns - span.start_ns
            if elapsed < after_ns or now_ns - (span.last_marker_ns or span.start_ns) < every_ns:
                continue
            span.last_marker_ns = now_ns
            span.markers += 1
            marker = OpenSpan(names.PROGRESS_SPAN_NAME, span.trace_id,
                              derived_span_id(span.trace_id, span.span_id, f"progress:{span.markers}"),
                              span.span_id, now_ns, span.path,
                              {names.SCOPE_PATH: span.path, names.PROGRESS_ELAPSED: elapsed / 1e9,
                               names.PROGRESS_STEPS: self.steps - span.steps_at_start})
            markers.append(self._finish(marker, now_ns, {}))
        return markers

    # --- records ------------------------------------------------------------------------------------

    def _experiment_start(self, record: AuditRecord) -> list[ReadableSpan]:
        if self.root is not None or not self._has_ids(record):
            return []
        data = record.data
        self.experiment_id = str(data.get("experiment_id") or "")
        constant = {names.EXPERIMENT_ID: self.experiment_id,
                    names.EXPERIMENT_NAME: str(data.get("name") or "")}
        worker = is_worker(record)
        tags = [t for t in data["tags"] if isinstance(t, str)] if isinstance(data.get("tags"), list) else []
        rank = rank_of(record)
        name = (names.WORKER_SPAN_NAME if worker else names.CHILD_SPAN_NAME if data.get("child") is True
                else names.RANK_SPAN_NAME.format(rank=rank) if data.get("rank_lane") is True
                else names.ROOT_SPAN_NAME)
        self.root = OpenSpan(
            name, record.trace_id, record.span_id, record.parent_span_id, record.time_ns, "",
            {**constant, names.EXPERIMENT_PURPOSE: str(data.get("purpose") or ""),
             names.EXPERIMENT_TAGS: tags, **({names.DL_RANK: rank} if rank is not None else {})})
        if worker:
            return []
        marker = OpenSpan(names.STARTED_SPAN_NAME, record.trace_id,
                          derived_span_id(record.trace_id, record.span_id, names.STARTED_SPAN_NAME),
                          record.span_id, record.time_ns, "", constant)
        return [self._finish(marker, record.time_ns, {})]

    def _scope_start(self, record: AuditRecord) -> None:
        if not self._has_ids(record):
            return
        level, ident = str(record.data.get("level") or ""), str(record.data.get("id") or "")
        attributes = {names.SCOPE_LEVEL: level, names.SCOPE_ID: ident, names.SCOPE_PATH: record.scope,
                      names.EXPERIMENT_ID: self.experiment_id,
                      **{k: v for k, v in record.data.items() if k not in ("level", "id")}}
        parent = self._parent(record, _parent_path(record.scope, f"{level}:{ident}"), record.time_ns)
        self.open[record.span_id] = OpenSpan(
            level, record.trace_id, record.span_id, parent, record.time_ns, record.scope, attributes,
            is_scope=True, steps_at_start=self.steps,
            window=("scopes", record.scope) if self.windows is not None else None)
        if self.windows is not None:
            self.windows.open(record.span_id, level, record.time_ns)

    def _scope_end(self, record: AuditRecord) -> list[ReadableSpan]:
        span = self.open.pop(record.span_id, None)
        if span is None:  # its start was never read: rebuilt from the end record alone
            if not self._has_ids(record):
                return []
            level, ident = str(record.data.get("level") or ""), str(record.data.get("id") or "")
            start = record.time_ns - (_nanoseconds(record.data.get("duration_s")) or 0)
            parent = self._parent(record, _parent_path(record.scope, f"{level}:{ident}"), start)
            attributes = {names.SCOPE_LEVEL: level, names.SCOPE_ID: ident, names.SCOPE_PATH: record.scope,
                          names.EXPERIMENT_ID: self.experiment_id}
            span = OpenSpan(level, record.trace_id, record.span_id, parent, start, record.scope, attributes)
        return [self._finish(span, record.time_ns, record.data)]

    def _phase(self, record: AuditRecord) -> list[ReadableSpan]:
        """Started and ended by its one record: the span is made at once, with no open span between."""
        if not self._has_ids(record):
            return []
        data = record.data
        name = str(data.get("name") or "phase")
        start = record.time_ns - (_nanoseconds(data.get("duration_s")) or 0)
        attributes: dict[str, Any] = {names.PHASE_NAME: name}
        if record.scope:
            attributes[names.SCOPE_PATH] = record.scope
        attributes[names.EXPERIMENT_ID] = self.experiment_id
        extra = data.get("attributes")  # the user's span attributes, once the trainer writes them
        if isinstance(extra, dict):
            attributes.update(extra)
        parent = self._parent(record, record.scope, start)
        window = None
        if self.windows is not None:
            self.windows.open(record.span_id, "phase", start)
            window = ("phases", name)
        return [self._span(name, record.trace_id, record.span_id, parent, start, record.time_ns, attributes,
                           data, window)]

    # --- helpers ------------------------------------------------------------------------------------

    def _has_ids(self, record: AuditRecord) -> bool:
        if record.trace_id and record.span_id:
            return True
        self.without_ids += 1
        return False

    def _parent(self, record: AuditRecord, path: str, start_ns: int) -> int | None:
        """The record's own parent id, else the innermost open scope at ``path`` (the root at top level)."""
        if record.parent_span_id:
            return record.parent_span_id
        best: OpenSpan | None = None
        for span in self.open.values():
            if (span.path == path and span.trace_id == record.trace_id and span.start_ns <= start_ns
                    and (best is None or span.start_ns >= best.start_ns)):
                best = span
        if best is not None:
            return best.span_id
        root = self.root
        return root.span_id if root is not None and root.trace_id == record.trace_id else None

    def _finish(self, span: OpenSpan, end_ns: int, data: Mapping[str, Any]) -> ReadableSpan:
        return self._span(span.name, span.trace_id, span.span_id, span.parent_id, span.start_ns, end_ns,
                          dict(span.attributes), data, span.window)

    def _span(self, name: str, trace_id: int, span_id: int, parent_id: int | None, start_ns: int, end_ns: int,
              attributes: dict[str, Any], data: Mapping[str, Any], window: tuple[str, str] | None,
              ) -> ReadableSpan:
        """The finished span; ``attributes`` is the caller's fresh dict, completed here and handed over."""
        measured = self.windows.close(span_id, end_ns, window) \
            if self.windows is not None and window is not None else {}
        resources = data.get("resources")
        attributes.update(resources if isinstance(resources, dict) else measured)
        _measured_in_trainer(attributes, data)
        events: list[Event] | tuple[()] = ()
        status = _UNSET
        truncated = data.get("truncated")
        error = data.get("error")
        if isinstance(truncated, str) or isinstance(error, str):
            events = []
            if isinstance(truncated, str):
                attributes[names.SPAN_TRUNCATED] = True
                reason = self._bounded({names.TRUNCATED_REASON: truncated})
                events.append(Event(names.EVENT_TRUNCATED, reason, end_ns))
            if isinstance(error, str):
                exception = self._bounded(_exception(error, data.get("exception")))
                events.append(Event(names.EXCEPTION_EVENT, exception, end_ns))
                status = Status(StatusCode.ERROR, encodable_text(error))
        limits = self.limits
        plain = plain_attributes(attributes, limits.max_span_attributes, limits.max_span_attribute_length)
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)
        parent = (SpanContext(trace_id, parent_id, is_remote=False, trace_flags=_SAMPLED) if parent_id
                  else None)
        return ReadableSpan(
            name=name if name.isascii() else encodable_text(name), context=context, parent=parent,
            resource=self.resource, attributes=plain if plain is not None else self._bounded(attributes),
            events=events, kind=_INTERNAL, status=status, start_time=start_ns,
            end_time=max(end_ns, start_ns), instrumentation_scope=self.scope)

    def _bounded(self, attributes: Mapping[str, Any]) -> BoundedAttributes:
        return BoundedAttributes(self.limits.max_span_attributes, encodable_attributes(attributes),
                                 immutable=True, max_value_len=self.limits.max_span_attribute_length)


def _measured_in_trainer(attributes: dict[str, Any], data: Mapping[str, Any]) -> None:
    """What the trainer measured at the block's enter and exit: its GPU time (CUDA events)."""
    gpu = data.get("gpu_duration_s")
    if isinstance(gpu, (int, float)) and not isinstance(gpu, bool):
        attributes[names.PHASE_GPU_DURATION if "name" in data else names.SCOPE_GPU_DURATION] = float(gpu)
    elif data.get("gpu_unresolved") is True:
        attributes[names.GPU_UNRESOLVED] = True


def _parent_path(path: str, own: str) -> str:
    """The scope path around a scope whose own segment is ``own`` (ids may hold ``/``: cut, never split)."""
    if path == own:
        return ""
    return path[: -len(own) - 1] if path.endswith("/" + own) else path.rpartition("/")[0]


def _exception(error: str, given: Any) -> dict[str, Any]:
    """The span's exception event: the record's ``exception`` fields when it has them, else from its
    ``error`` text (``Type: message``; no stack trace, and the type without its module)."""
    if isinstance(given, dict):
        out = {key: given[key] for key in ("type", "message", "stacktrace")
               if isinstance(given.get(key), str)}
        if out:
            return {names.EXCEPTION_TYPE: out.get("type", ""),
                    names.EXCEPTION_MESSAGE: out.get("message", ""),
                    **({names.EXCEPTION_STACKTRACE: out["stacktrace"]} if "stacktrace" in out else {}),
                    names.EXCEPTION_ESCAPED: "False"}
    kind, separator, message = error.partition(": ")
    if not separator or not kind.replace(".", "").replace("_", "").isalnum():
        kind, message = "", error
    return {names.EXCEPTION_TYPE: kind, names.EXCEPTION_MESSAGE: message, names.EXCEPTION_ESCAPED: "False"}
