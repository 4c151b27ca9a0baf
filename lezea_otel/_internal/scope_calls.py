"""The spec's scope calls and ``tracker.span()``, mixed into ``ExperimentTracker``.

A scope or phase is a child span of the one open around it, a path prefix for the records inside
it (``builder:42/network:n1``), and, where summaries are on, a resource summary on the span. The
tracker provides ``_ready``, ``_emit_at``, ``_stack``, ``_spans``, ``_root``, ``_open``...
"""

from __future__ import annotations

import contextvars
import functools
import time
from enum import Enum
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import set_span_in_context

from . import exit_hooks, names, values
from .readable import exception_fields
from .safety import error_text, guarded, shielded
from .scopes import TracedBlock
from .span_ids import ids


def _quiet(problem: str, detail: str) -> None:
    """A warner for a value already warned about."""


class NetworkType(str, Enum):
    """Which population a network belongs to."""

    TASKER = "tasker"
    BUILDER = "builder"
    HYBRID = "hybrid"


class Frame:
    """A scope or phase the tracker has entered and not yet left."""

    __slots__ = ("path", "span", "start_ns", "level", "ident", "token", "context_token", "trace_id", "span_id",
                 "ended", "parent_span_id", "attributes")

    def __init__(self, path: tuple[str, ...], span: Any, start_ns: int, level: str | None, ident: str,
                 parent_span_id: int = 0, attributes: dict[str, Any] | None = None) -> None:
        self.path, self.span, self.start_ns, self.level, self.ident = path, span, start_ns, level, ident
        self.trace_id, self.span_id = ids(span)
        self.parent_span_id = parent_span_id
        self.attributes = attributes or {}
        """The user's attributes of a phase (``tracker.span("x", lr=0.1)``): written into its record."""
        self.token: contextvars.Token[tuple[Frame, ...]] | None = None
        self.context_token: Any = None
        """The OTel context attached while the block runs (detached where it was attached)."""
        self.ended = False


class ScopeCalls:
    @guarded(default=TracedBlock.noop)
    def builder_scope(self, builder_id: Any) -> TracedBlock:
        """Records inside get the ``builder:<id>/`` prefix and a child span."""
        return self._scope("builder", builder_id)

    @guarded(default=TracedBlock.noop)
    def tasker_scope(self, tasker_id: Any) -> TracedBlock:
        return self._scope("tasker", tasker_id)

    @guarded(default=TracedBlock.noop)
    def algorithm_scope(self, algorithm_id: Any) -> TracedBlock:
        return self._scope("algorithm", algorithm_id)

    @guarded(default=TracedBlock.noop)
    def network_scope(self, network_id: Any, network_type: NetworkType | str | None = None) -> TracedBlock:
        extra = {}
        if network_type is not None:
            warn = functools.partial(self._warnings.warn, "network_scope")
            try:
                extra[names.NETWORK_TYPE] = NetworkType(network_type).value
            except Exception:  # noqa: BLE001 - ValueError, or an object whose __eq__/__hash__ raises
                warn("network_type is not a NetworkType", f"got {values.describe(network_type)}; recorded as text")
                extra[names.NETWORK_TYPE] = shielded(lambda: values.text(network_type, "network_type", _quiet),
                                                     "unknown", warn, "network_type") or "unknown"
        return self._scope("network", network_id, extra)

    @guarded(default=TracedBlock.noop)
    def layer_scope(self, layer_id: Any) -> TracedBlock:
        return self._scope("layer", layer_id)

    @guarded(default=TracedBlock.noop)
    def span(self, name: str, **attributes: Any) -> TracedBlock:
        """Time any stretch of training as a child span, as ``with`` block or decorator.

        Each phase name gets a duration histogram (``lezea.phase.duration``) whose exemplars
        link to the span.
        """
        warn = functools.partial(self._warnings.warn, "span")
        label = values.label(name, "name", warn) or ""
        if not label.strip():
            if name is not None:  # None was already warned about as missing
                warn("name is empty", f"got {label!r}; the span is named 'phase'")
            label = "phase"
        shaped = shielded(lambda: values.flat_attributes(values.plain(attributes, "attributes", warn)), {}, warn,
                          "attributes")
        return TracedBlock(self, None, label, shaped)

    def _scope(self, level: str, ident: Any, extra: dict[str, Any] | None = None) -> TracedBlock:
        """An id that cannot be read as text (its ``__str__`` raises) still opens the scope, named by its type."""
        warn = functools.partial(self._warnings.warn, f"{level}_scope")
        text = ident if type(ident) is str and len(ident) <= values.MAX_LABEL and ident.isascii() \
            else values.label(ident, f"{level}_id", warn)
        return TracedBlock(self, level, text if text is not None else "none", extra or {})

    def _enter_block(self, level: str | None, ident: str, attributes: dict[str, Any]) -> Frame:
        with exit_hooks.ending_lock(self):  # a scope opens before a finalize (and is truncated by it) or after it
            return self._open_frame(level, ident, attributes)

    def _open_frame(self, level: str | None, ident: str, attributes: dict[str, Any]) -> Frame:
        """The span's ids, the scope path, the OTel context (the user's own spans nest under it), and the
        start time as the last thing taken: what the tracker itself costs is not in the span."""
        call = f"{level}_scope" if level else "span"
        self._ready(call)
        stack = self._stack.get()
        parent = stack[-1] if stack else None
        path = parent.path if parent else ()
        if level is not None:
            path = (*path, f"{level}:{ident}")
        span = self._spans.start(level or ident, {}, parent.span if parent else self._root)
        parent_span_id = parent.span_id if parent else ids(self._root)[1]
        frame = Frame(path, span, 0, level, ident, parent_span_id, attributes if level is None else None)
        frame.token = self._stack.set((*stack, frame))
        frame.context_token = otel_context.attach(set_span_in_context(span))
        self._open[id(frame)] = frame
        frame.start_ns = time.time_ns()
        if level is not None:
            self._emit_at(frame, "scope_start", {"level": level, "id": ident, **attributes}, frame.start_ns)
        return frame

    def _exit_block(self, frame: Frame, error: BaseException | None, truncated_by: str | None = None,
                    end_ns: int | None = None) -> None:
        """``end_ns``: taken by the with-block as the first thing on exit."""
        # A finalize in another thread truncates the open scopes: under this lock each ends once, and
        # an exit already under way finishes before the run's end record.
        with exit_hooks.ending_lock(self):
            self._end_frame(frame, error, truncated_by, end_ns or time.time_ns())

    def _end_frame(self, frame: Frame, error: BaseException | None, truncated_by: str | None, end_ns: int) -> None:
        self._open.pop(id(frame), None)
        if frame.ended:  # already closed as truncated at finalize; the with-block only now unwinds
            if truncated_by is None:
                self._leave(frame)
            return
        frame.ended = True
        self._spans.end(frame.span)
        if truncated_by is None:
            self._leave(frame)
        data: dict[str, Any] = {"duration_s": (end_ns - frame.start_ns) / 1e9}
        if error is not None:
            data["error"] = error_text(error)
            data["exception"] = exception_fields(error)
        if frame.attributes:
            data["attributes"] = frame.attributes
        if truncated_by is not None:
            data["truncated"] = truncated_by
        if frame.level is not None:
            self._emit_at(frame, "scope_end", {"level": frame.level, "id": frame.ident, **data}, end_ns)
        else:
            self._emit_at(frame, "phase", {"name": frame.ident, **data}, end_ns)

    def _leave(self, frame: Frame) -> None:
        """The scope path and the OTel context as they were before the block, in the block's own context."""
        try:
            self._stack.reset(frame.token)  # type: ignore[arg-type]
        except ValueError:  # exited in another context (e.g. a generator): drop this frame only
            self._stack.set(tuple(f for f in self._stack.get() if f is not frame))
            return
        except RuntimeError:  # the token was used already
            return
        token, frame.context_token = frame.context_token, None
        if token is not None:
            otel_context.detach(token)
