"""Spans: the experiment is the root span; scopes and phases are its descendants.

Spans are started and ended on the caller's thread (they are few), so their ids exist at once
and every later record of the call can carry them, whichever thread writes the record. Every
name and attribute is made encodable here: one lone surrogate in a span name kills the trace
exporter's thread, and with it the root span, which is sent last.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import names
from .readable import exception_fields
from .safety import encodable_attributes, encodable_text, error_text


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
            encodable_text(name), context=context, kind=SpanKind.INTERNAL,
            attributes=encodable_attributes(attributes), start_time=start_ns,
        )
        self.started += 1
        return span

    def set_attributes(self, span: Span, attributes: dict[str, Any]) -> None:
        """Attributes added to a live span (the root's configuration), made encodable like the rest."""
        span.set_attributes(encodable_attributes(attributes))

    def end(self, span: Span, error: BaseException | None = None, end_ns: int | None = None,
            attributes: dict[str, Any] | None = None) -> None:
        if attributes:
            span.set_attributes(encodable_attributes(attributes))
        if error is not None:
            fields = exception_fields(error)
            span.add_event("exception", {  # record_exception() would call str() on the user's error
                names.EXCEPTION_TYPE: fields["type"],
                "exception.message": fields["message"],
                "exception.stacktrace": fields["stacktrace"],
                "exception.escaped": "False",
            })
            span.set_status(Status(StatusCode.ERROR, encodable_text(error_text(error))))
        span.end(end_time=end_ns)
        self.ended += 1


def ids(span: Span | None) -> tuple[int, int]:
    """(trace id, span id) of a span, zeros when there is none or it is not sampled."""
    if span is None:
        return 0, 0
    context = span.get_span_context()
    return context.trace_id, context.span_id
