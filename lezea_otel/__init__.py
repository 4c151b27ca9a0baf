"""lezea_otel: the LeZeA experiment-tracker API, recorded as OpenTelemetry spans, metrics and logs."""

from lezea_otel.config.settings import guard_sdk_environment as _guard_sdk_environment

# Before anything imports the OTel SDK: it reads some variables at import time and raises on bad ones
# (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc). Unusable values are corrected first and reported at start().
_guard_sdk_environment()

from lezea_otel.exceptions import LezeaConfigError  # noqa: E402
from lezea_otel.tracker import ExperimentTracker, NetworkType  # noqa: E402
from lezea_otel.version import __version__  # noqa: E402

__all__ = ["__version__", "ExperimentTracker", "LezeaConfigError", "NetworkType"]
