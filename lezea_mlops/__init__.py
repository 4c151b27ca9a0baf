"""The connector spec's import path: ``from lezea_mlops.tracker import ExperimentTracker, NetworkType``.

Research code written against the spec runs unchanged; the tracker is ``lezea_otel``'s (this package only
re-exports it)."""

from lezea_otel import ExperimentTracker, NetworkType

__all__ = ["ExperimentTracker", "NetworkType"]
