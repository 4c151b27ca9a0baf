"""The spec's scope calls and ``tracker.span()``: their arguments shaped into a :class:`TracedBlock`.

A scope or phase is a child span of the one open around it and a path prefix for the records inside
it (``builder:42/network:n1``); the session enters and leaves it (``Session.enter_block``).
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.trainer.scopes import TracedBlock
from lezea_otel.trainer.session import Session
from lezea_otel.util import values
from lezea_otel.util.safety import shielded

_NO_ATTRIBUTES: dict[str, Any] = {}
"""Shared by every block without attributes (never written to: a record copies what it keeps)."""


def _quiet(problem: str, detail: str) -> None:
    """A warner for a value already warned about."""


class NetworkType(str, Enum):
    """Which population a network belongs to."""

    TASKER = "tasker"
    BUILDER = "builder"
    HYBRID = "hybrid"


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
        link to the span.
        """
        if not attributes and type(name) is str and len(name) <= values.MAX_LABEL and name.isascii() \
                and name.strip():
            return TracedBlock(self._session, None, name, _NO_ATTRIBUTES)  # the common case: nothing to shape
        warn = functools.partial(self._session.warnings.warn, "span")
        label = values.label(name, "name", warn) or ""
        if not label.strip():
            if name is not None:  # None was already warned about as missing
                warn("name is empty", f"got {label!r}; the span is named 'phase'")
            label = "phase"
        shaped: dict[str, Any] = shielded(
            lambda: values.flat_attributes(values.plain(attributes, "attributes", warn)), {}, warn,
            "attributes")
        return TracedBlock(self._session, None, label, shaped)

    def _scope(self, level: str, ident: Any, extra: dict[str, Any] | None = None) -> TracedBlock:
        """An id that cannot be read as text (its ``__str__`` raises) still opens the scope, named by its
        type."""
        if type(ident) is str and len(ident) <= values.MAX_LABEL and ident.isascii():
            return TracedBlock(self._session, level, ident, extra or _NO_ATTRIBUTES)  # nothing to shape
        warn = functools.partial(self._session.warnings.warn, f"{level}_scope")
        text = values.label(ident, f"{level}_id", warn)
        return TracedBlock(self._session, level, text if text is not None else "none", extra or {})
