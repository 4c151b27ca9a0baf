"""A scope or phase the tracker has entered and not yet left: what the session keeps of it."""

from __future__ import annotations

import contextvars
from typing import Any


class Frame:
    """A scope or phase the tracker has entered and not yet left."""

    __slots__ = (
        "attributes",
        "context_token",
        "ended",
        "ident",
        "level",
        "parent_span_id",
        "path",
        "span",
        "span_id",
        "start_ns",
        "token",
        "trace_id",
    )

    def __init__(self, path: tuple[str, ...], span: Any, trace_id: int, span_id: int, level: str | None,
                 ident: str, parent_span_id: int, attributes: dict[str, Any] | None) -> None:
        self.path, self.span, self.level, self.ident = path, span, level, ident
        self.trace_id, self.span_id, self.parent_span_id = trace_id, span_id, parent_span_id
        self.start_ns = 0
        self.attributes = attributes
        """The user's attributes of a phase (``tracker.span("x", lr=0.1)``): written into its record."""
        self.token: contextvars.Token[tuple[Frame, ...]] | None = None
        self.context_token: Any = None
        """The OTel context attached while the block runs (detached where it was attached)."""
        self.ended = False
