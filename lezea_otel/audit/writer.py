"""Writing ``runs/<id>/events.jsonl``: the run's source of truth, one JSON object per tracker call.

Lines are encoded with orjson and written buffered, in whole lines only (a full disk costs the
lines it refused, counted, never a torn line: see ``line_file``); the buffer reaches the file at
least every 200 ms (the exporter reads it there) and always at finalize, so a crash loses at most the
last 200 ms; fsyncs follow ``LEZEA_AUDIT_FSYNC``, off the training thread. Non-finite floats,
which JSON cannot hold, are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
the line lists where they are (``"nonfinite": [["metrics", "loss"]]``) and ``reader.read_events``
turns exactly those back into floats, so a user's text "NaN" stays text. A value no line can
hold (shaping let it through) is made plain and the line written anyway: never lost, counted.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

import orjson

from lezea_otel import semconv as names
from lezea_otel.audit.line_file import LineFile
from lezea_otel.audit.record import NONFINITE, Record
from lezea_otel.util import values
from lezea_otel.util.safety import logger

FLUSH_INTERVAL_S = 0.2
"""Lines reach the file (where the exporter reads them) at least this often while records arrive."""
FSYNC_INTERVAL_S = 1.0
"""With ``LEZEA_AUDIT_FSYNC=interval``, fsync at most this often, from the flusher thread, never the
caller."""


def _marked(value: Any) -> bool:
    """Whether ``value`` holds a non-finite float or a text that reads like one (checked before copying)."""
    kind = type(value)
    if kind is float:
        number: float = value
        return number - number != 0
    if kind is str:
        return value in NONFINITE
    if kind is int or kind is bool or value is None:
        return False
    if kind is dict:
        return _any_marked(value.values())
    if kind is list or kind is tuple:
        return _any_marked(value)
    return True  # a subclass or an odd object: the full pass looks at it


def _any_marked(items: Any) -> bool:
    """:func:`_marked` over a container's items, plain scalars checked inline (the common case)."""
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0:
                return True
        elif kind is str:
            if item in NONFINITE:
                return True
        elif not (kind is int or kind is bool or item is None) and _marked(item):
            return True
    return False


def _finite_safe(value: Any, found: list[Any], path: list[Any]) -> Any:
    """A copy with non-finite floats as text, the path of each appended to ``found``; a text that reads
    like one (a user's "NaN") appends ``None``, so its line is marked and that text stays text."""
    if isinstance(value, float):
        if value - value == 0:
            return value if type(value) is float else float.__float__(value)  # np.float64 is a float
        found.append(list(path))
        return values.format_float(value)
    if isinstance(value, str):
        if value in NONFINITE:
            found.append(None)
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            path.append(key if isinstance(key, str) else str(key))
            out[key] = _finite_safe(item, found, path)
            path.pop()
        return out
    if isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            path.append(index)
            items.append(_finite_safe(item, found, path))
            path.pop()
        return items
    return value


class _Clock:
    """ISO-8601 UTC text for a nanosecond time, formatting the date part once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, time_ns: int) -> str:
        micros = time_ns // 1000
        second = micros // 1_000_000
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return f"{self._prefix}{micros - second * 1_000_000:06d}Z"


class AuditWriter:
    """Appends records to ``events.jsonl``; the caller serializes access (one pipeline lock)."""

    repaired = 0
    """Lines whose record held a value no JSON line can (shaping let it through): written made plain."""
    report: Callable[[str, str], None] | None = None
    """``warn(problem, detail)`` for a repaired line; without one, the first repair is logged."""

    def __init__(self, path: Path, fsync: str = "interval") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fsync = fsync
        self.each_line_durable = fsync == "always"
        """``LEZEA_AUDIT_FSYNC=always``: every line is fsynced as it is written (and written at its call)."""
        self._file = LineFile(path)  # whole lines only, reentrancy-safe; losses counted (see audit_file)
        self._clock = _Clock()
        self._last_flush = self._last_fsync = time.monotonic()
        self.flush_every_s = FLUSH_INTERVAL_S
        """Lines reach the file at least this often (async mode: more often, its queue adds its own wait)."""
        self._unsynced = False
        self.seq = 0
        self.encoding: tuple[Record | None, bytes] = (None, b"")
        self._full = False
        self._trace: tuple[int, str | None] = (0, None)
        self._span: tuple[int, str | None] = (0, None)
        self._parent: tuple[int, str] = (0, "")
        self._scope: tuple[tuple[str, ...], str] = ((), "")

    def detach_after_fork(self) -> None:
        """In a forked child: the queued lines and the file are the parent's; nothing from the child
        reaches them."""
        self._file.detach_after_fork()

    def write(self, record: Record) -> None:
        """The record's line, queued for the file, then flushed as the policy says (a writer of its own;
        the pipeline appends a batch and settles once)."""
        self.append(record)
        self.settle()

    def append(self, record: Record) -> bytes:
        """The record's line, queued for the file (not yet flushed: :meth:`settle` does that). Returns the
        line; after an interruption (a signal handler that raised), :meth:`queued` says whether it got in."""
        self.seq += 1
        try:
            encoded = self._encode(record)
        except Exception as error:  # noqa: BLE001 - the last line of defence: repaired, never lost
            encoded = self._repair(record, error)
        self.encoding = (record, encoded)  # one assignment: the pair is always this record's
        self._full = self._file.append(encoded)  # (after close, a late call's line is written at once)
        return encoded

    def queued(self, record: Record) -> bool:
        """Whether :meth:`append` of ``record``, cut short somewhere, got its line queued for the file."""
        owner, line = self.encoding
        return owner is record and self._file.last_is(line)

    def settle(self) -> None:
        """After appends: a full buffer goes to the OS, as a buffered file would; with
        ``LEZEA_AUDIT_FSYNC=always`` every line is fsynced; and at least every ``FLUSH_INTERVAL_S``
        the lines reach the file (an fsync is the flusher thread's job)."""
        if self.each_line_durable:
            self.flush(durable=True)
        elif self._full or monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()
        self._full = False

    def _encode(self, record: Record) -> bytes:
        found: list[Any] = []
        data = record.data
        if data and _any_marked(data.values()):
            data = _finite_safe(data, found, [])
        metrics = record.values
        if metrics is not None:
            if record.scope:
                metrics = {record.scoped(k): v for k, v in metrics.items()}
            if sum(metrics.values()) - sum(metrics.values()) != 0:  # some value is NaN or infinite
                metrics = _finite_safe(metrics, found, ["metrics"])
            data = {"metrics": metrics, **data}
        # Consecutive records mostly share their trace, span, parent and scope: their text is kept.
        if record.trace_id != self._trace[0]:
            self._trace = (record.trace_id, f"{record.trace_id:032x}" if record.trace_id else None)
        if record.span_id != self._span[0]:
            self._span = (record.span_id, f"{record.span_id:016x}" if record.span_id else None)
        if record.scope is not self._scope[0]:
            self._scope = (record.scope, "/".join(record.scope))
        line = {
            "seq": self.seq,
            "time": self._clock.iso(record.time_ns),
            "time_unix_nano": record.time_ns,
            "kind": record.kind,
            "step": record.step,
            "scope": self._scope[1],
            "trace_id": self._trace[1],
            "span_id": self._span[1],
            "data": data,
        }
        if record.parent_span_id:
            if record.parent_span_id != self._parent[0]:
                self._parent = (record.parent_span_id, f"{record.parent_span_id:016x}")
            line["parent_span_id"] = self._parent[1]
        if found:
            line["nonfinite"] = [path for path in found if path is not None]
        return orjson.dumps(line, default=values.json_default,
                            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)

    def _repair(self, record: Record, error: Exception) -> bytes:
        """Make the record plain in place (the run state and the signals then see what the audit got)."""
        self.repaired += 1
        record.kind = values.as_text(record.kind, "kind", values.ignore)[:64]
        detail = f"{values.error_text(error)}; written with its values made plain (text where needed)"
        if self.report is not None:
            self.report(f"a {record.kind} record held a value no JSON line can hold", detail)
        elif self.repaired == 1:
            logger.warning("audit: a %s record held a value no JSON line can hold: %s", record.kind, detail)
        record.data = values.sanitise(record.data) if isinstance(record.data, dict) else {}
        if record.values is not None:
            numbers = ((values.text_key(k, "metrics", values.ignore), values.as_number(v))
                       for k, v in values.items_of(record.values, "metrics", values.ignore))
            record.values = {k: v for k, v in numbers if values.is_number(v)}
        record.step = values.step_value(record.step, "step", values.ignore)
        record.scope = tuple(values.as_text(part, "scope", values.ignore)
                             for part in values.iterate(record.scope, "scope", values.ignore))
        for name in ("time_ns", "trace_id", "span_id", "parent_span_id"):
            if type(getattr(record, name)) is not int:
                setattr(record, name, time.time_ns() if name == "time_ns" else 0)
        try:
            return self._encode(record)
        except Exception as second:  # noqa: BLE001 - even so: a line that says what was lost
            record.data = {"unwritable": values.error_text(second)}
            record.values = None
            return self._encode(record)

    def flush_if_due(self) -> None:
        """Called every ``FLUSH_INTERVAL_S`` by the pipeline's flusher thread: a quiet run's last lines reach
        the file (and the exporter) too, and the fsync policy's work is done here, off the training thread."""
        now = time.monotonic()
        if self._file.pending and now - self._last_flush >= self.flush_every_s:
            self.flush()
        if self._fsync == "interval" and now - self._last_fsync >= FSYNC_INTERVAL_S and self._unsynced:
            self.flush(durable=True)

    def flush(self, durable: bool = False) -> None:
        """To the OS (survives kill -9); ``durable`` also fsyncs (survives a power or node loss)."""
        self._file.flush(durable)
        self._last_flush = time.monotonic()
        if durable:
            self._last_fsync = self._last_flush
        self._unsynced = not durable

    def close(self) -> None:
        """Flushed and fsynced, whatever the policy; later lines are still appended, one at a time."""
        self._file.close()

    def remove_if_empty(self) -> None:
        """The file, when no line was ever written to it, and its folder when that is left empty."""
        with contextlib.suppress(OSError):
            if self.seq == 0 and self.path.stat().st_size == 0:
                self.path.unlink()
                self.path.parent.rmdir()

    @property
    def lost_lines(self) -> int:
        """Lines the file refused (disk full, quota): counted, never torn."""
        return self._file.lost_lines

    def loss(self) -> str:
        """The lines the disk refused (full, quota, I/O error), for one warning; empty when none."""
        return self._file.loss()

    def __del__(self) -> None:  # a tracker dropped without finalize still leaves a complete audit
        try:
            if "_file" in vars(self):  # not when the file could not even be opened
                self.close()
        except Exception:  # noqa: BLE001, S110 - at garbage collection there is no one to tell
            pass


def open_audit(runs_dir: Path, experiment_id: str, warn: Callable[[str, str], None],
               fsync: str = "interval", member: str = "") -> tuple[Path, AuditWriter]:
    """The run folder (``member``: a rank's folder inside the experiment's) and its audit; a runs folder that
    cannot be written falls back to a temporary one. A folder whose audit another process wrote already
    (a launch id used twice, a second run of one ``LEZEA_EXPERIMENT_ID``) is never appended to: the run
    takes the next ``-attempt-<n>`` beside it."""
    run_dir = member_folder(runs_dir / experiment_id, member)
    try:
        writer = AuditWriter(run_dir / names.AUDIT_FILE, fsync)
    except OSError as error:
        fallback = member_folder(Path(tempfile.gettempdir()) / "lezea-runs" / experiment_id, member)
        warn(f"the runs folder {runs_dir} is not writable", f"{error}; writing the audit to {fallback}")
        run_dir, writer = fallback, AuditWriter(fallback / names.AUDIT_FILE, fsync)
    writer.report = warn
    return run_dir, writer


def member_folder(experiment_dir: Path, member: str) -> Path:
    """``member`` (``""``: the experiment's folder itself), or the first ``-attempt-<n>`` after it whose
    audit nobody wrote yet."""
    first = experiment_dir / member if member else experiment_dir
    if not _written(first):
        return first
    mark = names.ATTEMPT_SUFFIX.format(attempt="")
    stem, _, number = member.partition(mark)
    attempt = int(number) if number.isdigit() else 0
    while True:
        attempt += 1
        candidate = experiment_dir / (stem + mark + str(attempt) if stem else
                                      names.ATTEMPT_DIR.format(attempt=attempt))
        if not _written(candidate):
            return candidate


def _written(folder: Path) -> bool:
    try:
        return (folder / names.AUDIT_FILE).stat().st_size > 0
    except OSError:
        return False
