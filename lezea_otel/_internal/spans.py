"""Spans: the experiment is the root span; scopes and phases are its descendants.

Spans are started and ended on the caller's thread (they are few), so their ids exist at once
and every later record of the call can carry them, whichever thread writes the record.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import names


class SpanRecorder:
    def __init__(self, provider: TracerProvider | None, version: str) -> None:
        self._tracer = (
            provider.get_tracer(names.INSTRUMENTATION_NAME, version) if provider is not None else trace.NoOpTracer()
        )
        self.started = 0
        self.ended = 0

    def start(self, name: str, attributes: dict[str, Any], parent: Span | None, start_ns: int | None = None) -> Span:
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self._tracer.start_span(
            name, context=context, kind=SpanKind.INTERNAL, attributes=attributes, start_time=start_ns
        )
        self.started += 1
        return span

    def end(self, span: Span, error: BaseException | None = None, end_ns: int | None = None,
            attributes: dict[str, Any] | None = None) -> None:
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=end_ns)
        self.ended += 1


def ids(span: Span | None) -> tuple[int, int]:
    """(trace id, span id) of a span, zeros when there is none or it is not sampled."""
    if span is None:
        return 0, 0
    context = span.get_span_context()
    return context.trace_id, context.span_id
