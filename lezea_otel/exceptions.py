"""The one exception lezea_otel raises, and only from ``start()`` in strict mode.

    ValueError
     └── LezeaConfigError   a setting (argument, LEZEA_* or OTEL_* variable) cannot be used
"""

from __future__ import annotations


class LezeaConfigError(ValueError):
    """Raised by ``start(strict=True)`` (or with ``LEZEA_STRICT=1``) when the configuration is unusable."""
