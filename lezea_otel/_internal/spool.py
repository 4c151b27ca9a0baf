"""Nothing is silently lost: OTLP batches the collector did not take are spooled to disk and retried.

Each OTLP exporter is wrapped: a batch it delivers is counted as exported; a batch it could not
deliver (down, refusing, timing out), and every batch after it until the spool is empty again, is
appended to ``runs/<id>/spool/<signal>.jsonl`` in the
OTLP-JSON-lines format and counted as spooled. While the run lives, one background thread resends
the spool oldest first, with exponential backoff, through the exporter's own connection (so the
same endpoint, headers, TLS and compression apply); what it delivers leaves the spool file. What is
still there at finalize waits for ``lezea-otel replay``. The counts make the run's delivery report:
``produced == exported + spooled + dropped`` at the end, and ``retried`` counts the exported items
that needed the spool.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.exporter.otlp.json.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.json.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .otlp_json import REJECTED_FOLDER, SIGNAL_FILES, item_count, to_request
from .safety import report_internal_error

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 10.0
REJECTED = "rejected"
"""A resend's answer when the collector refuses the request for good (HTTP 4xx but 408/429, or a
non-retryable gRPC status): trying again cannot help, and the batches behind it must not wait."""
Resend = Callable[[Any], "bool | str"]
# The OTLP specification's retryable gRPC codes; any other refusal is final.
_RETRYABLE_GRPC = {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS",
                   "RESOURCE_EXHAUSTED"}


@dataclass
class SignalCounts:
    """Items (spans, metric batches, log records) per delivery outcome."""

    produced: int = 0
    exported: int = 0
    retried: int = 0
    spooled: int = 0
    rejected: int = 0
    dropped: int = 0


class Spool:
    """One per run: the spool folder, the per-signal counts and the retry thread."""

    def __init__(self, folder: Path, first_backoff_s: float = FIRST_BACKOFF_S) -> None:
        self.folder = folder
        self.counts = {signal: SignalCounts() for signal in SIGNAL_FILES}
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._resend: dict[str, Resend] = {}
        self._exporters: list[Any] = []
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._first_backoff = first_backoff_s
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()  # a retry thread is started before anyone can see (and join) it
        self._owner = os.getpid()

    def write(self, signal: str, encoded: dict[str, Any] | None) -> bool:
        if encoded is None:
            return True
        line = orjson.dumps(encoded, option=orjson.OPT_APPEND_NEWLINE)
        try:
            with self._lock:
                self.folder.mkdir(parents=True, exist_ok=True)
                with open(self.folder / SIGNAL_FILES[signal], "ab") as handle:
                    handle.write(line)
        except OSError:
            return False
        self._start_retrying()
        return True

    def count(self, signal: str, **changes: int) -> None:
        """Export threads, the metric reader and the retry thread all count: one lock keeps sums exact."""
        with self._count_lock:
            counts = self.counts[signal]
            for name, change in changes.items():
                setattr(counts, name, getattr(counts, name) + change)

    def backlog(self, signal: str) -> bool:
        """Batches wait in the spool (those set aside as refused for good do not count)."""
        counts = self.counts[signal]
        return counts.spooled > counts.rejected

    def report(self) -> dict[str, dict[str, int]]:
        with self._count_lock:
            return {signal: asdict(counts) for signal, counts in self.counts.items()}

    def register(self, exporter: Any, signal: str, resend: Resend | None) -> None:
        self._exporters.append(exporter)
        if resend is not None:
            self._resend[signal] = resend

    def settle(self) -> None:
        """Spools the batches still in flight, so the report adds up and a replay can send them."""
        for exporter in self._exporters:
            exporter.settle()

    def abandon_stuck(self, older_than_s: float) -> None:
        for exporter in self._exporters:
            exporter.abandon_if_stuck(older_than_s)

    def stop(self, timeout_s: float) -> None:
        """Stops retrying; a resend in flight gets ``timeout_s`` to finish."""
        with self._thread_lock:  # waits for a retry thread being started, so that it can be joined
            self._stopped.set()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _start_retrying(self) -> None:
        if self._thread is not None or self._stopped.is_set() or not self._resend or os.getpid() != self._owner:
            return
        with self._thread_lock:
            if self._thread is None and not self._stopped.is_set():
                thread = threading.Thread(target=self._retry_loop, name="lezea-otel-spool", daemon=True)
                thread.start()
                self._thread = thread

    def _retry_loop(self) -> None:
        backoff = self._first_backoff
        while not self._stopped.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                complete = self.retry_once()
            except Exception as error:  # noqa: BLE001 - the retry thread must outlive any surprise
                report_internal_error("spool retry", error)
                complete = False
            backoff = self._first_backoff if complete else min(backoff * 2, MAX_BACKOFF_S)

    def retry_once(self) -> bool:
        """Resends every spooled line, oldest first, until one fails; True when the spool is empty."""
        complete = True
        for signal, resend in self._resend.items():
            if not self._retry_file(signal, resend):
                complete = False
        return complete

    def _retry_file(self, signal: str, resend: Resend) -> bool:
        """Streams the file (a long outage makes a large spool); a line that is not taken yet ends the
        pass, a line refused for good is set aside in ``rejected/`` so the ones behind it go on."""
        path = self.folder / SIGNAL_FILES[signal]
        if not path.is_file():
            return True
        done = delivered = 0
        rejected: list[bytes] = []
        rejected_items = 0
        complete = True
        with open(path, "rb") as handle:
            for line in handle:
                if self._stopped.is_set() or not line.endswith(b"\n"):
                    complete = False
                    break
                try:
                    request = to_request(signal, line)
                except ValueError:
                    complete = False
                    break  # a corrupt line is replay's to report, with its line number
                answer = _quietly(resend, request)
                if answer is False:
                    complete = False
                    break
                done += 1
                if answer == REJECTED:
                    rejected.append(line)
                    rejected_items += item_count(signal, request)
                else:
                    delivered += item_count(signal, request)
        if done:
            self._drop_first(path, done, rejected)
            self.count(signal, exported=delivered, retried=delivered, spooled=-delivered, rejected=rejected_items)
        return complete

    def _drop_first(self, path: Path, done: int, rejected: list[bytes]) -> None:
        """Rewrites the spool without its first ``done`` lines (batches spooled meanwhile are kept);
        the refused ones move to ``rejected/``, still undelivered, for replay and for reading."""
        with self._lock:
            if rejected:
                aside = self.folder / REJECTED_FOLDER
                aside.mkdir(exist_ok=True)
                with open(aside / path.name, "ab") as target:
                    target.writelines(rejected)
            temporary = path.with_suffix(".tmp")
            with open(path, "rb") as source, open(temporary, "wb") as target:
                for _ in range(done):
                    source.readline()
                shutil.copyfileobj(source, target)
            temporary.replace(path)


def _quietly(resend: Resend, request: Any) -> bool | str:
    try:
        return resend(request)
    except Exception:  # noqa: BLE001 - down, timing out: all mean "not yet"
        return False


def resender(exporter: Any, signal: str) -> Resend | None:
    """Sends a spooled request through the OTLP exporter's own client: its endpoint, headers, TLS,
    compression and timeout. These are the exporters' internals (no public API takes a request);
    when they are not there, live retry is off and the spool waits for replay."""
    client = getattr(exporter, "_client", None)
    if callable(getattr(client, "export", None)):  # OTLP/HTTP
        def send_http(request: Any) -> bool | str:
            result = client.export(request.SerializeToString())
            if result.success:
                return True
            code = result.status_code
            return REJECTED if code is not None and 400 <= code < 500 and code not in (408, 429) else False
        return send_http
    if hasattr(exporter, "_headers") and hasattr(exporter, "_timeout") and hasattr(exporter, "_translate_data"):
        def send_grpc(request: Any) -> bool | str:
            import grpc

            try:
                exporter._client.Export(request=request, metadata=exporter._headers, timeout=exporter._timeout)
            except grpc.RpcError as error:
                if error.code().name not in _RETRYABLE_GRPC:
                    return REJECTED
                reconnect = getattr(exporter, "_initialize_channel_and_stub", None)
                if error.code() == grpc.StatusCode.UNAVAILABLE and reconnect is not None:
                    exporter._channel.close()
                    reconnect()  # as the exporter does: a fresh channel skips gRPC's long reconnect backoff
                return False
            return True
        return send_grpc
    return None


class _Spooling:
    """Shared logic: try the real exporter, spool on failure, count either way."""

    def _setup(self, inner: Any, spool: Spool, signal: str, encode: Callable[[Any], Any],
               size: Callable[[Any], int]) -> None:
        self._inner, self._spool, self._signal, self._encode, self._size = inner, spool, signal, encode, size
        self._flight_lock = threading.Lock()
        self._in_flight: tuple[Any, int, float] | None = None  # batch, items, since
        self._queues: list[Any] = []
        self._settled = False
        self._inner_shut = False
        spool.register(self, signal, resender(inner, signal))

    def register_queue(self, queue: Any) -> None:
        self._queues.append(queue)

    def _deliver(self, batch: Any, success: Any, **kwargs: Any) -> bool:
        items = self._size(batch)
        if self._settled or self._spool.backlog(self._signal):
            return self.keep_batch(batch)  # an outage: the spool keeps the order, the retry thread probes
        self._spool.count(self._signal, produced=items)
        with self._flight_lock:
            self._in_flight = (batch, items, time.monotonic())
        try:
            delivered = self._inner.export(batch, **kwargs) == success
        except Exception:  # noqa: BLE001 - an exporter raising is one more way of not delivering
            delivered = False
        with self._flight_lock:
            if self._in_flight is None:  # settled at finalize while the collector was still answering
                return delivered
            self._in_flight = None
        if delivered:
            self._spool.count(self._signal, exported=items)
            return True
        return self._keep(batch, items)

    def keep_batch(self, batch: Any) -> bool:
        items = self._size(batch)
        self._spool.count(self._signal, produced=items)
        return self._keep(batch, items)

    def _keep(self, batch: Any, items: int) -> bool:
        try:
            encoded = self._encode(batch).to_dict()
        except Exception:  # noqa: BLE001
            encoded = None
        self._spool.count(self._signal, spooled=items)
        if encoded is not None and self._spool.write(self._signal, encoded):
            return True
        self._spool.count(self._signal, spooled=-items, dropped=items)
        return False

    def settle(self) -> None:
        """Finalize's bound ran out: spool the batch still on the wire and everything still queued, so
        a run that exits now loses nothing (a collector that did take the batch sees it twice after a
        replay: at least once, never lost)."""
        self._settled = True
        with self._flight_lock:
            flight, self._in_flight = self._in_flight, None
        if flight is not None:
            self._keep(*flight[:2])
        for queue in self._queues:
            queue.settle()

    def abandon_if_stuck(self, older_than_s: float) -> None:
        """At finalize: an export on the wire for longer than ``older_than_s`` (a dead collector being
        retried, or one answering in seconds) is given up. Its batch and every later one are spooled,
        and the exporter is shut down so that its retry loop stops waiting."""
        flight = self._in_flight
        if flight is None or time.monotonic() - flight[2] < older_than_s:
            return
        self._settled = True
        with self._flight_lock:
            flight, self._in_flight = self._in_flight, None
        if flight is not None:
            self._keep(*flight[:2])
        threading.Thread(target=self._shutdown_inner, name="lezea-otel-abandon", daemon=True).start()

    def shutdown(self) -> None:  # spans and logs; the metric exporter takes a timeout
        self._shutdown_inner()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def _shutdown_inner(self, **kwargs: Any) -> None:
        with self._flight_lock:
            if self._inner_shut:
                return
            self._inner_shut = True
        try:
            self._inner.shutdown(**kwargs)
        except Exception:  # noqa: BLE001 - a failing shutdown must not stop the others
            return


class SpoolingSpanExporter(_Spooling, SpanExporter):
    def __init__(self, inner: SpanExporter, spool: Spool) -> None:
        self._setup(inner, spool, "traces", encode_spans, len)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        ok = self._deliver(spans, SpanExportResult.SUCCESS)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class SpoolingLogExporter(_Spooling, LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, spool: Spool) -> None:
        self._setup(inner, spool, "logs", encode_logs, len)

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        ok = self._deliver(batch, LogRecordExportResult.SUCCESS)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE


class SpoolingMetricExporter(_Spooling, MetricExporter):
    def __init__(self, inner: MetricExporter, spool: Spool) -> None:
        MetricExporter.__init__(self, preferred_temporality=inner._preferred_temporality,  # noqa: SLF001
                                preferred_aggregation=inner._preferred_aggregation)  # noqa: SLF001
        self._setup(inner, spool, "metrics", encode_metrics, lambda _batch: 1)

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        ok = self._deliver(metrics_data, MetricExportResult.SUCCESS, timeout_millis=timeout_millis, **kwargs)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._shutdown_inner(timeout_millis=timeout_millis)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)
