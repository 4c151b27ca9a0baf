"""Span identities assigned on the training thread, with the OpenTelemetry API only (no SDK).

With an exporter beside the trainer, a scope or phase is only an id pair and its records: the
exporter builds the span from them. The ids live in a ``NonRecordingSpan`` (SAMPLED, so the user's
own SDK spans started inside a scope nest under it instead of turning non-recording), which is what
the current OTel context carries while the scope is open.
"""

from __future__ import annotations

import random

from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_bits = random.getrandbits  # as the SDK's RandomIdGenerator; random reseeds in a forked child


class IdSpans:
    """Span ids for the run's spans, counted (``summary["spans"]``); no span objects of the SDK."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def start(self, trace_id: int = 0) -> NonRecordingSpan:
        """A new span of the trace ``trace_id`` (a new trace for 0): the ids the exporter builds it with."""
        return otel_span(*self.child(trace_id))

    def child(self, trace_id: int) -> tuple[int, int]:
        """(trace id, span id) of a new span of the trace ``trace_id`` (a new trace for 0)."""
        self.started += 1
        return trace_id or _bits(128) or 1, _bits(64) or 1

    def end(self) -> None:
        self.ended += 1


def ids(span: Span | None) -> tuple[int, int]:
    """(trace id, span id) of a span; zeros when there is none."""
    if span is None:
        return 0, 0
    context = span.get_span_context()
    return context.trace_id, context.span_id


def otel_span(trace_id: int, span_id: int) -> NonRecordingSpan:
    """The span the OTel API context carries for a scope or phase (SAMPLED: the user's spans record)."""
    return NonRecordingSpan(SpanContext(trace_id, span_id, False, _SAMPLED))
