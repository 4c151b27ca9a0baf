"""The spec's scope calls and ``tracker.span()``: their arguments shaped into a :class:`TracedBlock`.

A scope or phase is a child span of the one open around it and a path prefix for the records inside
it (``builder:42/network:n1``); the session enters and leaves it (``Session.enter_block``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from typing import Any, TypeVar

from lezea_otel import semconv as names
from lezea_otel.trainer.scopes import TracedBlock
from lezea_otel.trainer.session import Session
from lezea_otel.util import values
from lezea_otel.util.readable import error_text
from lezea_otel.util.safety import raise_internal, report_internal_error, shielded, truth

T = TypeVar("T")

_NO_ATTRIBUTES: dict[str, Any] = {}


def _plain(attributes: dict[str, Any]) -> bool:
    """Attributes a span takes as they are (the common ``tracker.span("forward", batch=3)``): short ASCII
    keys, and values that are short ASCII text, booleans, 64-bit integers or finite floats; ``sync`` is
    no attribute. Anything else goes through the shaping, which warns where it must."""
    for key, value in attributes.items():
        if len(key) > values.MAX_KEY or not key.isascii() or key == "sync":
            return False
        kind = type(value)
        if kind is str:
            if len(value) > values.MAX_LABEL or not value.isascii():
                return False
        elif kind is int:
            if not values.INT64_MIN <= value <= values.INT64_MAX:
                return False
        elif kind is float:
            if value - value != 0:  # NaN or infinite
                return False
        elif kind is not bool:
            return False
    return True
"""Shared by every block without attributes (never written to: a record copies what it keeps)."""


def _quiet(problem: str, detail: str) -> None:
    """A warner for a value already warned about."""


class NetworkType(str, Enum):
    """Which population a network belongs to."""

    TASKER = "tasker"
    BUILDER = "builder"
    HYBRID = "hybrid"


def _waits(session: Session, items: Iterator[T], name: str, attributes: dict[str, Any]) -> Iterator[T]:
    """Each ``next()`` of ``items`` as a phase; the last one, that found no item, leaves no phase. The
    iterable's own exception is recorded on the phase and raised unchanged."""
    while True:
        frame = _guarded(session.enter_block, None, name, attributes)
        try:
            item = next(items)
        except StopIteration:
            if frame is not None:
                _guarded(session.discard_block, frame)
            return
        except BaseException as error:
            end_ns = time.time_ns()
            if frame is not None:
                _guarded(session.exit_block, frame, error, None, end_ns)
            raise
        end_ns = time.time_ns()
        if frame is not None:
            _guarded(session.exit_block, frame, None, None, end_ns)
        yield item


def _guarded(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as error:
        if raise_internal():
            raise
        report_internal_error("iterate", error)
        return None


class ScopeCalls:
    """``builder_scope`` ... ``layer_scope`` and ``span``: the facade delegates to these."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def builder_scope(self, builder_id: Any) -> TracedBlock:
        """Records inside get the ``builder:<id>/`` prefix and a child span."""
        return self._scope("builder", builder_id)

    def tasker_scope(self, tasker_id: Any) -> TracedBlock:
        return self._scope("tasker", tasker_id)

    def algorithm_scope(self, algorithm_id: Any) -> TracedBlock:
        return self._scope("algorithm", algorithm_id)

    def network_scope(self, network_id: Any, network_type: NetworkType | str | None = None) -> TracedBlock:
        extra = {}
        if network_type is not None:
            warn = functools.partial(self._session.warnings.warn, "network_scope")
            try:
                extra[names.NETWORK_TYPE] = NetworkType(network_type).value
            except Exception:  # noqa: BLE001 - ValueError, or an object whose __eq__/__hash__ raises
                warn("network_type is not a NetworkType",
                     f"got {values.describe(network_type)}; recorded as text")
                extra[names.NETWORK_TYPE] = shielded(
                    lambda: values.text(network_type, "network_type", _quiet) or "unknown", "unknown", warn,
                    "network_type",
                )
        return self._scope("network", network_id, extra)

    def layer_scope(self, layer_id: Any) -> TracedBlock:
        return self._scope("layer", layer_id)

    def span(self, name: str, **attributes: Any) -> TracedBlock:
        """Time any stretch of training as a child span, as ``with`` block or decorator.

        Each phase name gets a duration histogram (``lezea.phase.duration``) whose exemplars
        link to the span. ``sync=True`` is no attribute: the phase waits for the GPU at exit.
        """
        sync = self._session.probes.sync_all
        if type(name) is str and len(name) <= values.MAX_LABEL and name.isascii() and name.strip() and \
                (not attributes or _plain(attributes)):  # nothing to shape; ``**attributes`` is a new dict
            return TracedBlock(self._session, None, name, attributes or _NO_ATTRIBUTES, sync)
        warn = functools.partial(self._session.warnings.warn, "span")
        if "sync" in attributes:
            sync = truth(attributes.pop("sync"), "sync", warn)
        return TracedBlock(self._session, None, self._label(name, warn), self._shaped(attributes, warn), sync)

    def iterate(self, iterable: Iterable[T], phase: str = "data") -> Iterator[T]:
        """The items of ``iterable``; the wait for each is a phase (``lezea.phase.kind = data_wait``)."""
        warn = functools.partial(self._session.warnings.warn, "iterate")
        try:
            items = iter(iterable)
        except Exception as error:  # noqa: BLE001 - not iterable: nothing to yield, said once
            warn("iterable cannot be iterated", f"{error_text(error)}; nothing is yielded")
            return iter(())
        return _waits(self._session, items, self._label(phase, warn), {names.PHASE_KIND: names.DATA_WAIT})

    @staticmethod
    def _label(name: Any, warn: values.Warn) -> str:
        label = values.label(name, "name", warn) or ""
        if not label.strip():
            if name is not None:  # None was already warned about as missing
                warn("name is empty", f"got {label!r}; the span is named 'phase'")
            label = "phase"
        return label

    @staticmethod
    def _shaped(attributes: dict[str, Any], warn: values.Warn) -> dict[str, Any]:
        return shielded(
            lambda: values.flat_attributes(values.plain(attributes, "attributes", warn)), {}, warn,
            "attributes")

    def _scope(self, level: str, ident: Any, extra: dict[str, Any] | None = None) -> TracedBlock:
        """An id that cannot be read as text (its ``__str__`` raises) still opens the scope, named by its
        type."""
        if type(ident) is str and len(ident) <= values.MAX_LABEL and ident.isascii():
            return TracedBlock(self._session, level, ident, extra or _NO_ATTRIBUTES)  # nothing to shape
        warn = functools.partial(self._session.warnings.warn, f"{level}_scope")
        text = values.label(ident, f"{level}_id", warn)
        return TracedBlock(self._session, level, text if text is not None else "none", extra or {})
