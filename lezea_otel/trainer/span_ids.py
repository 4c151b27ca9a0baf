"""Span identities assigned on the training thread, with the OpenTelemetry API only (no SDK).

With an exporter beside the trainer, a scope or phase is only an id pair and two records: the
exporter builds the span from them. The ids live in a ``NonRecordingSpan`` (SAMPLED, so the user's
own SDK spans started inside a scope nest under it instead of turning non-recording), which is what
the current OTel context carries while the scope is open.
"""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_bits = random.getrandbits  # as the SDK's RandomIdGenerator; random reseeds in a forked child


class IdSpans:
    """The :class:`.spans.SpanRecorder` interface for the exporter modes: ids, no span objects of the SDK."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def start(self, name: str, attributes: dict[str, Any], parent: Span | None,
              start_ns: int | None = None) -> Span:
        parent_context = parent.get_span_context() if parent is not None else None
        trace_id = parent_context.trace_id if parent_context is not None and parent_context.is_valid \
            else _bits(128) or 1
        self.started += 1
        return NonRecordingSpan(SpanContext(trace_id, _bits(64) or 1, is_remote=False,
                                            trace_flags=_SAMPLED))

    def set_attributes(self, span: Span, attributes: dict[str, Any]) -> None:
        """The exporter takes a span's attributes from its records."""

    def end(self, span: Span, error: BaseException | None = None, end_ns: int | None = None,
            attributes: dict[str, Any] | None = None) -> None:
        self.ended += 1


def ids(span: Span | None) -> tuple[int, int]:
    """(trace id, span id) of a span; zeros when there is none."""
    if span is None:
        return 0, 0
    context = span.get_span_context()
    return context.trace_id, context.span_id
