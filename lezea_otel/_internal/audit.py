"""``runs/<id>/events.jsonl``: the run's source of truth, one JSON object per tracker call.

Lines are encoded with orjson and written buffered; the buffer is flushed at least once a
second, and always at finalize, so a crash loses at most the last second. Non-finite floats,
which JSON cannot hold, are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
and read back as floats by :func:`read_events`.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from .record import Record

FLUSH_INTERVAL_S = 1.0
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite_safe(value: Any) -> Any:
    if isinstance(value, float):
        if value != value or value in (math.inf, -math.inf):
            return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        return value
    if isinstance(value, dict):
        return {k: _finite_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_safe(v) for v in value]
    return value


class _Clock:
    """ISO-8601 UTC text for a nanosecond time, formatting the date part once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, time_ns: int) -> str:
        second, rest = divmod(time_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}Z"


class AuditWriter:
    """Appends records to ``events.jsonl``; the caller serializes access (one pipeline lock)."""

    def __init__(self, path: Path, fsync: str = "interval") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fsync = fsync
        self._dirty = False
        self._file: IO[bytes] | None = open(path, "ab", buffering=1 << 16)  # noqa: SIM115
        self._clock = _Clock()
        self._last_flush = time.monotonic()
        self.seq = 0
        self._ids: tuple[int, int, str | None, str | None] = (0, 0, None, None)

    def detach_after_fork(self) -> None:
        """In a forked child: the inherited buffer holds the parent's unflushed lines; point the copied
        descriptor at /dev/null so that no flush from the child ever reaches the parent's file."""
        if self._file is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._file.fileno())
            os.close(devnull)

    def write(self, record: Record) -> None:
        self.seq += 1
        data = record.data
        metrics = record.values
        if metrics is not None:
            if record.scope:
                metrics = {record.scoped(k): v for k, v in metrics.items()}
            if sum(metrics.values()) - sum(metrics.values()) != 0:  # some value is NaN or infinite
                metrics = _finite_safe(metrics)
            data = {"metrics": metrics, **data}
        elif data:
            data = _finite_safe(data)
        ids = self._ids
        if ids[0] != record.trace_id or ids[1] != record.span_id:
            ids = self._ids = (record.trace_id, record.span_id,
                               f"{record.trace_id:032x}" if record.trace_id else None,
                               f"{record.span_id:016x}" if record.span_id else None)
        line = {
            "seq": self.seq,
            "time": self._clock.iso(record.time_ns),
            "time_unix_nano": record.time_ns,
            "kind": record.kind,
            "step": record.step,
            "scope": record.scope_path,
            "trace_id": ids[2],
            "span_id": ids[3],
            "data": data,
        }
        encoded = orjson.dumps(line, default=repr, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
        if self._file is None:  # after close: late calls still reach the audit
            with open(self.path, "ab") as late:
                late.write(encoded)
            return
        self._file.write(encoded)
        if self._fsync == "always":
            self.flush(durable=True)
            return
        self._dirty = True
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush(durable=self._fsync == "interval")

    def flush_if_due(self) -> None:
        """Called once a second by the pipeline, so a quiet run also has at most a second at risk."""
        if self._dirty and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush(durable=self._fsync == "interval")

    def flush(self, durable: bool = False) -> None:
        """To the OS (survives kill -9); ``durable`` also fsyncs (survives a power or node loss)."""
        if self._file is not None:
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())
        self._dirty = False
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self.flush(durable=True)  # always at finalize, whatever the policy
            self._file.close()
            self._file = None

    def __del__(self) -> None:  # a tracker dropped without finalize still leaves a complete audit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def open_audit(runs_dir: Path, experiment_id: str, warn: Callable[[str, str], None],
               fsync: str = "interval") -> tuple[Path, AuditWriter]:
    """The run folder and its audit; a runs folder that cannot be written falls back to a temporary one."""
    run_dir = runs_dir / experiment_id
    try:
        return run_dir, AuditWriter(run_dir / "events.jsonl", fsync)
    except OSError as error:
        fallback = Path(tempfile.gettempdir()) / "lezea-runs" / experiment_id
        warn(f"the runs folder {runs_dir} is not writable", f"{error}; writing the audit to {fallback}")
        return fallback, AuditWriter(fallback / "events.jsonl", fsync)


def _revive(value: Any) -> Any:
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def read_events(path: Path, problems: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every readable line of an audit file; a torn or corrupt line is skipped and reported."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                if problems is not None:
                    problems.append(f"{path}: line {number} is not valid JSON (torn or corrupt); skipped")
                continue
            if isinstance(event.get("data"), dict):
                event["data"] = _revive(event["data"])
            yield event
