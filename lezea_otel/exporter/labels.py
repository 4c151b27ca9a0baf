"""A metric point's attributes, and the key of the series they name, made once per label set.

Every record that sets a metric names its series by attributes: the run's constant ones (experiment
id and name), the scope path, and a few of its own (a phase's name, a split). A training loop brings
the same few label sets with every record, and each costs two cleanings (``encodable_attributes``)
and a sort; :class:`LabelSets` makes each once and hands the same pair out again.
"""

from __future__ import annotations

from typing import Any

from lezea_otel import semconv as names
from lezea_otel.util.safety import encodable_attributes

Labels = tuple[dict[str, Any], tuple[Any, ...]]
"""A point's attributes and the key of their series (read them, never change them: they are shared)."""
MAX_LABEL_SETS = 4096
"""Label sets remembered; past it the memo starts again (a run whose labels never repeat pays as before)."""
_PLAIN = (str, int, bool)
"""Values remembered by. Not float: 0.0 and -0.0 are equal keys, and would get each other's attributes."""


def series_key(attributes: dict[str, Any]) -> tuple[Any, ...]:
    """The attributes as a hashable key, independent of their order."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attributes.items()))


class LabelSets:
    """The label sets of one run, over its constant attributes (already encodable)."""

    def __init__(self, constant: dict[str, Any]) -> None:
        self._constant = constant
        self._known: dict[tuple[Any, ...], Labels] = {}

    def get(self, scope: str, extra: dict[str, Any] | None = None) -> Labels:
        """The constant attributes, then the scope path (when there is one), then ``extra``."""
        memo_key = _memo_key(scope, extra)
        known = self._known.get(memo_key) if memo_key is not None else None
        if known is not None:
            return known
        attributes = dict(self._constant)
        if scope:
            attributes[names.SCOPE_PATH] = scope
        attributes = {**encodable_attributes(attributes), **encodable_attributes(extra)}
        labels = attributes, series_key(attributes)
        if memo_key is not None:
            if len(self._known) >= MAX_LABEL_SETS:
                self._known.clear()
            self._known[memo_key] = labels
        return labels


def _memo_key(scope: str, extra: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """(scope, extra) as a key, the values' types in it (1 and True are equal keys otherwise); None when
    ``extra`` holds something else than text keys and plain values (it is then made each time)."""
    if not extra:
        return (scope,)
    key: list[Any] = [scope]
    for name, value in extra.items():
        kind = type(value)
        if type(name) is not str or kind not in _PLAIN:
            return None
        key.extend((name, kind, value))
    return tuple(key)
