"""The OTLP export queue for spans and log records: batches on one thread, never drops.

The SDK's batch processors drop what does not fit their queue and lose what is still queued when
shutdown gives up on a slow collector. This one hands every batch to a spooling exporter: during
an outage batches go straight to the spool, a queue that grows past its bound is spooled by the
caller (backpressure, never loss), and at finalize whatever the bound did not let through is
spooled too. Every ended span and emitted record is therefore exported, spooled or counted as
dropped (only when the disk refuses).
"""

from __future__ import annotations

import copy
import os
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import SpanProcessor

from .parameters import BY_NAME

_PREFIX = {"traces": "bsp", "logs": "blrp"}
OPTIONS = ("schedule_delay_ms", "max_queue_size", "max_export_batch_size")


def default_options(signal: str) -> dict[str, int]:
    """The declared defaults of ``OTEL_BSP_*`` (traces) or ``OTEL_BLRP_*`` (logs)."""
    return {option: BY_NAME[f"{_PREFIX[signal]}_{option}"].default for option in OPTIONS}


def _readable_log(log_record: Any) -> Any:
    """What the SDK's own log processors hand to exporters, without the (possibly large) context."""
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.resources import Resource

    api_record = copy.copy(log_record.log_record)
    api_record.context = Context()
    return ReadableLogRecord(log_record=api_record, resource=log_record.resource or Resource.create({}),
                             instrumentation_scope=log_record.instrumentation_scope, limits=log_record.limits)


class _ExportQueue:
    signal = ""

    def __init__(self, exporter: Any, options: Mapping[str, int] | None = None) -> None:
        """``options``: ``Settings.export_queue(signal)``, already checked and bounded; the declared
        defaults without. (The queue bound is larger than the SDK's 2048: past it the caller spools a
        batch itself, and a collector down at start holds the first export for up to its timeout.)"""
        chosen = {**default_options(self.signal), **(options or {})}
        self._exporter = exporter
        self._delay_s = chosen["schedule_delay_ms"] / 1000
        self._max_batch = chosen["max_export_batch_size"]
        self._max_queue = max(chosen["max_queue_size"], self._max_batch)
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = False
        self._owner = os.getpid()
        exporter.register_queue(self)
        self._thread = threading.Thread(target=self._run, name="lezea-otel-export", daemon=True)
        self._thread.start()

    def _add(self, item: Any) -> None:
        if self._stopped or os.getpid() != self._owner:
            return  # after finalize only the audit records; a forked child never sends the parent's data
        queue = self._queue
        queue.append(item)
        size = len(queue)
        if size >= self._max_batch:
            self._wake.set()
        if size > self._max_queue:
            self._exporter.keep_batch(self._take())  # the exporter is stuck: spool now rather than grow

    def _take(self) -> list[Any]:
        batch = []
        try:
            for _ in range(self._max_batch):
                batch.append(self._queue.popleft())
        except IndexError:
            pass
        return batch

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self._drain()
            if self._stopped:
                return

    def _drain(self) -> None:
        self._idle.clear()
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    self._exporter.export(batch)
        finally:
            self._idle.set()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._stopped:
            return True
        self._idle.clear()  # before waking the worker, so its next drain is the one waited for
        self._wake.set()
        return self._idle.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Exports what is queued; bounded by the caller (finalize), which then calls :meth:`settle`."""
        self._stopped = True
        self._wake.set()
        self._thread.join()
        self._drain()
        self._exporter.shutdown()

    def settle(self) -> None:
        """Finalize's bound ran out: spool everything still queued, without touching the network."""
        while self._queue:
            self._exporter.keep_batch(self._take())


class SpanExportQueue(_ExportQueue, SpanProcessor):
    signal = "traces"

    def on_end(self, span: Any) -> None:
        self._add(span)


class LogExportQueue(_ExportQueue, LogRecordProcessor):
    signal = "logs"

    def on_emit(self, log_record: Any) -> None:
        self._add(_readable_log(log_record))
