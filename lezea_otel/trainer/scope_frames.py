"""A scope or phase the tracker has entered and not yet left: what the session keeps of it."""

from __future__ import annotations

import contextvars
from typing import Any

from lezea_otel.audit.record import Kind, Record


class Frame:
    """A scope or phase the tracker has entered and not yet left."""

    __slots__ = (
        "attributes",
        "context_token",
        "cuda_start",
        "ended",
        "gpu_duration_s",
        "gpu_unresolved",
        "ident",
        "level",
        "nvtx",
        "parent_span_id",
        "path",
        "span_id",
        "start_ns",
        "token",
        "trace_id",
    )

    def __init__(self, path: tuple[str, ...], trace_id: int, span_id: int, level: str | None,
                 ident: str, parent_span_id: int, attributes: dict[str, Any] | None) -> None:
        self.path, self.level, self.ident = path, level, ident
        self.trace_id, self.span_id, self.parent_span_id = trace_id, span_id, parent_span_id
        self.start_ns = 0
        self.attributes = attributes
        """The user's attributes of a phase (``tracker.span("x", lr=0.1)``): written into its record."""
        self.token: contextvars.Token[tuple[Frame, ...]] | None = None
        self.context_token: Any = None
        """The OTel context attached while the block runs (detached where it was attached)."""
        self.ended = False
        self.cuda_start: Any = None
        """The CUDA event recorded at enter (``trainer.gpu_timing``); None when the GPU is not timed."""
        self.gpu_duration_s: float | None = None
        """Set by the resolver: the GPU time between the enter and exit events."""
        self.gpu_unresolved = False
        """The exit event had not completed when the run ended (or its time could not be read)."""
        self.nvtx = False

    def end_record(self, end_ns: int, failure: dict[str, Any] | None, truncated_by: str | None) -> Record:
        """The span's end: a ``phase`` record (a phase's only one) or a ``scope_end``, at ``end_ns``.

        Args:
            failure: ``error`` and ``exception`` of the exception that left the block, if one did.
            truncated_by: what ended the block before its with-statement did (a finalize, a signal).
        """
        duration = (end_ns - self.start_ns) / 1e9
        data: dict[str, Any] = {"name": self.ident, "duration_s": duration} if self.level is None \
            else {"level": self.level, "id": self.ident, "duration_s": duration}
        if failure is not None:
            data.update(failure)
        if self.attributes:
            data["attributes"] = self.attributes
        if truncated_by is not None:
            data["truncated"] = truncated_by
        if self.gpu_duration_s is not None:
            data["gpu_duration_s"] = self.gpu_duration_s
        elif self.gpu_unresolved:
            data["gpu_unresolved"] = True
        return Record(Kind.PHASE if self.level is None else Kind.SCOPE_END, end_ns, None, self.path,
                      self.trace_id, self.span_id, data, None, self.parent_span_id)
