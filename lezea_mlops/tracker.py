"""``from lezea_mlops.tracker import ExperimentTracker, NetworkType``: the spec's import, ``lezea_otel``'s
tracker."""

from lezea_otel.tracker import ExperimentTracker, NetworkType

__all__ = ["ExperimentTracker", "NetworkType"]
