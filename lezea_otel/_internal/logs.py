"""Log records (events) correlated with the trace: config, checkpoints, datasets, comments...

The only module that touches the SDK's unstable ``_logs`` package. Bodies and attributes are made
encodable here: one lone surrogate in a comment or a checkpoint path would kill the log exporter's
thread, and every later record with it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider

from . import names
from .safety import encodable_attributes, encodable_text


class LogRecorder:
    def __init__(self, provider: LoggerProvider, version: str, constant_attributes: dict[str, Any]) -> None:
        self._logger = provider.get_logger(names.INSTRUMENTATION_NAME, version)
        self._constant = encodable_attributes(constant_attributes)
        self.emitted = 0

    def emit(
        self,
        event_name: str,
        body: str,
        attributes: dict[str, Any],
        *,
        time_ns: int,
        context: Context | None,
        warning: bool = False,
    ) -> None:
        self._logger.emit(
            timestamp=time_ns,
            context=context,
            severity_number=SeverityNumber.WARN if warning else SeverityNumber.INFO,
            severity_text="WARN" if warning else "INFO",
            body=encodable_text(body) if isinstance(body, str) else body,
            attributes={**self._constant, **encodable_attributes(attributes)},
            event_name=event_name,
        )
        self.emitted += 1
