"""The spec's scope calls and ``tracker.span()``, mixed into ``ExperimentTracker``.

A scope or phase is a child span of the one open around it, a path prefix for the records inside
it (``builder:42/network:n1``), and, where summaries are on, a resource summary on the span. The
tracker provides ``_ready``, ``_emit_at``, ``_stack``, ``_spans``, ``_root``, ``_open``, ``_observers``...
"""

from __future__ import annotations

import contextvars
import functools
import time
from enum import Enum
from typing import Any

from . import exit_hooks, names, values
from .readable import exception_fields
from .safety import error_text, guarded, shielded
from .scopes import TracedBlock
from .spans import ids


def _quiet(problem: str, detail: str) -> None:
    """A warner for a value already warned about."""


class NetworkType(str, Enum):
    """Which population a network belongs to."""

    TASKER = "tasker"
    BUILDER = "builder"
    HYBRID = "hybrid"


class Frame:
    """A scope or phase the tracker has entered and not yet left."""

    __slots__ = ("path", "span", "start_ns", "level", "ident", "token", "trace_id", "span_id", "resources", "ended",
                 "steps_at_enter", "parent_span_id", "attributes")

    def __init__(self, path: tuple[str, ...], span: Any, start_ns: int, level: str | None, ident: str,
                 parent_span_id: int = 0, attributes: dict[str, Any] | None = None) -> None:
        self.path, self.span, self.start_ns, self.level, self.ident = path, span, start_ns, level, ident
        self.trace_id, self.span_id = ids(span)
        self.parent_span_id = parent_span_id
        self.attributes = attributes or {}
        """The user's attributes of a phase (``tracker.span("x", lr=0.1)``): written into its record."""
        self.token: contextvars.Token[tuple[Frame, ...]] | None = None
        self.resources: int | None = None
        self.ended = False
        self.steps_at_enter = 0


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
        call = f"{level}_scope" if level else "span"
        self._ready(call)
        stack = self._stack.get()
        parent = stack[-1] if stack else None
        path = parent.path if parent else ()
        if level is not None:
            path = (*path, f"{level}:{ident}")
            span_name = level
            attrs = {names.SCOPE_LEVEL: level, names.SCOPE_ID: ident, names.SCOPE_PATH: "/".join(path)}
        else:
            span_name = ident
            attrs = {names.PHASE_NAME: ident, **({names.SCOPE_PATH: "/".join(path)} if path else {})}
        attrs[names.EXPERIMENT_ID] = self.experiment_id
        start_ns = time.time_ns()
        span = self._spans.start(span_name, {**attrs, **attributes}, parent.span if parent else self._root, start_ns)
        parent_span_id = parent.span_id if parent else ids(self._root)[1]
        frame = Frame(path, span, start_ns, level, ident, parent_span_id, attributes if level is None else None)
        if self._observers is not None and (level or "phase") in self.settings.scope_resources:
            frame.resources = self._observers.scope_enter()
        frame.steps_at_enter = self._state.steps
        frame.token = self._stack.set((*stack, frame))
        self._open[id(frame)] = frame
        if level is not None:
            self._emit_at(frame, "scope_start", {"level": level, "id": ident, **attributes}, start_ns)
        return frame

    def _exit_block(self, frame: Frame, error: BaseException | None, truncated_by: str | None = None) -> None:
        # A finalize in another thread truncates the open scopes: under this lock each ends once, and
        # an exit already under way finishes before the run's end record.
        with exit_hooks.ending_lock(self):
            self._end_frame(frame, error, truncated_by)

    def _end_frame(self, frame: Frame, error: BaseException | None, truncated_by: str | None) -> None:
        self._open.pop(id(frame), None)
        if frame.ended:  # already closed as truncated at finalize; the with-block only now unwinds
            if truncated_by is None:
                try:
                    self._stack.reset(frame.token)  # type: ignore[arg-type]
                except (ValueError, RuntimeError):  # another context, or the token was used already
                    pass
            return
        frame.ended = True
        end_ns = time.time_ns()
        resources = self._observers.scope_exit(frame.resources) if self._observers and frame.resources is not None \
            else {}
        if truncated_by is not None:
            frame.span.add_event(names.EVENT_TRUNCATED, {"reason": truncated_by})
            resources = {**resources, names.SPAN_TRUNCATED: True}
        self._spans.end(frame.span, error, end_ns, resources)
        if truncated_by is None:
            try:
                self._stack.reset(frame.token)  # type: ignore[arg-type]
            except ValueError:  # exited in another context (e.g. a generator): drop this frame only
                self._stack.set(tuple(f for f in self._stack.get() if f is not frame))
        data: dict[str, Any] = {"duration_s": (end_ns - frame.start_ns) / 1e9}
        if error is not None:
            data["error"] = error_text(error)
            data["exception"] = exception_fields(error)
        if frame.attributes:
            data["attributes"] = frame.attributes
        if truncated_by is not None:
            data["truncated"] = truncated_by
        if resources:
            data["resources"] = {k: v for k, v in resources.items() if k != names.SPAN_TRUNCATED}
        if frame.level is not None:
            self._emit_at(frame, "scope_end", {"level": frame.level, "id": frame.ident, **data}, end_ns)
        else:
            self._emit_at(frame, "phase", {"name": frame.ident, **data}, end_ns)
