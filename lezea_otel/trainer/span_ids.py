"""Span identities assigned on the training thread, and the OTel API context that carries them.

With an exporter beside the trainer, a scope or phase is only an id pair and its records: the
exporter builds the span from them. While a scope or phase is open, the current OTel context can carry
its ids in a ``NonRecordingSpan`` (SAMPLED, so the user's own SDK spans started inside nest under it
instead of turning non-recording). The OpenTelemetry API is imported on the first such use only: a
trainer in which nothing records spans never loads it.
"""

from __future__ import annotations

import random
from typing import Any

_bits = random.getrandbits  # as the SDK's RandomIdGenerator; random reseeds in a forked child


class IdSpans:
    """Span ids for the run's spans, counted (``summary["signals"]["spans"]``)."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def child(self, trace_id: int) -> tuple[int, int]:
        """(trace id, span id) of a new span of the trace ``trace_id`` (a new trace for 0)."""
        self.started += 1
        return trace_id or _bits(128) or 1, _bits(64) or 1

    def end(self) -> None:
        self.ended += 1


class _Api:
    """The three OTel API calls a scope needs, bound on first use."""

    def __init__(self) -> None:
        from opentelemetry import context, trace

        self.attach, self.detach = context.attach, context.detach
        self.in_context, self.span, self.span_context = (trace.set_span_in_context, trace.NonRecordingSpan,
                                                          trace.SpanContext)
        self.sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)


_api: _Api | None = None


def attach(trace_id: int, span_id: int) -> Any:
    """Make the span ``(trace_id, span_id)`` the current OTel context; the token is for :func:`detach`."""
    global _api
    api = _api or _Api()
    _api = api
    return api.attach(api.in_context(api.span(api.span_context(trace_id, span_id, False, api.sampled))))


def detach(token: Any) -> None:
    """The OTel context as it was before the matching :func:`attach`."""
    if _api is not None:
        _api.detach(token)
