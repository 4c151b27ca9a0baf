"""Scopes and phases as context managers (and phases as decorators) that never break the run.

A scope (``builder_scope("42")``) changes the key prefix (``builder:42/loss``) and opens a child
span; a phase (``tracker.span("forward")``) only opens a child span and times it. The user's own
exception inside either is recorded on the span and re-raised unchanged.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from lezea_otel.util.safety import raise_internal, report_internal_error

if TYPE_CHECKING:
    from lezea_otel.trainer.session import Session

F = TypeVar("F", bound=Callable[..., Any])


class TracedBlock:
    """Returned by the scope calls and by ``tracker.span()``: use it with ``with`` or as ``@decorator``."""

    __slots__ = ("_attributes", "_frames", "_ident", "_level", "_sync", "_tracker")

    @classmethod
    def noop(cls) -> TracedBlock:
        """What a scope call returns when its own arguments could not even be bound: a block that does
        nothing."""
        return cls(None, None, "", {})

    def __init__(self, tracker: Session | None, level: str | None, ident: str,
                 attributes: dict[str, Any], sync: bool = False) -> None:
        self._tracker = tracker
        self._level = level  # None for a phase
        self._ident = ident
        self._attributes = attributes
        self._sync = sync
        """Wait for the GPU's work at exit, before the end time is taken (``span(name, sync=True)``)."""
        self._frames: list[Any] = []

    def __enter__(self) -> TracedBlock:
        frame = None
        if self._tracker is None:
            self._frames.append(None)
            return self
        try:
            frame = self._tracker.enter_block(self._level, self._ident, self._attributes)
        except Exception as error:
            if raise_internal():
                raise
            report_internal_error(self._call_name, error)
        self._frames.append(frame)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> Literal[False]:
        if self._sync and self._tracker is not None:
            self._synchronize(self._tracker)
        end_ns = time.time_ns()  # the first thing on exit: the tracker's own cost is not in the span
        frame = self._frames.pop() if self._frames else None
        if frame is not None and self._tracker is not None:
            try:
                self._tracker.exit_block(frame, error, None, end_ns)
            except Exception as internal:
                if raise_internal():
                    raise
                report_internal_error(self._call_name, internal)
        return False  # the user's exception, if any, propagates unchanged

    def _synchronize(self, tracker: Session) -> None:
        try:
            tracker.probes.synchronize()
        except Exception as internal:
            if raise_internal():
                raise
            report_internal_error(self._call_name, internal)

    def __call__(self, function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with TracedBlock(self._tracker, self._level, self._ident, self._attributes, self._sync):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    @property
    def _call_name(self) -> str:
        return f"{self._level}_scope" if self._level else "span"
