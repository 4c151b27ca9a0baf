"""lezea_otel: the LeZeA experiment-tracker API, recorded as OpenTelemetry spans, metrics and logs."""

from .exceptions import LezeaConfigError
from .tracker import ExperimentTracker, NetworkType
from .version import __version__

__all__ = ["__version__", "ExperimentTracker", "LezeaConfigError", "NetworkType"]
