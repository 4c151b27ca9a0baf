"""Following an audit file from a persisted position: the exporter's only way of reading a run.

The trainer appends whole lines, but a reader can land between a line's first bytes and its
newline (a buffer reaching the OS in two writes, a kill -9 mid-write): a last line without its
newline is left for the next read, and taken as it is only at the end (``final=True``: the trainer is
gone). The position is a byte offset plus the last ``seq`` read. The offset makes resuming cheap; the
seq makes it safe: a file that shrank or changed under the cursor is read again from the start, and
records already read (by seq) are skipped, so nothing acknowledged is handed out twice.

Reading and committing are separate steps: :meth:`AuditCursor.read` moves the in-memory position,
:meth:`AuditCursor.commit` persists it once the data read is delivered, and :meth:`AuditCursor.rewind`
goes back to the last commit after a failed delivery. The audit is the spool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

# The audit's own decoding of non-finite values ("NaN" text marked in the line) is reused, never re-derived.
from lezea_otel.audit.reader import decode_line
from lezea_otel.exporter.records import AuditRecord

CHUNK_BYTES = 1 << 20
"""Bytes read per step (a longer line is read whole): bounds memory on a huge audit."""
MAX_PROBLEMS = 100


@dataclass(frozen=True, slots=True)
class Position:
    """Where a cursor stands: ``offset`` bytes into the file, after the record numbered ``seq``."""

    offset: int = 0
    seq: int = 0


class AuditCursor:
    """Reads the records of one audit file in order, from a position persisted in ``state_path``."""

    def __init__(self, path: Path, state_path: Path | None = None, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = path
        self.state_path = state_path
        self._chunk = max(1, chunk_bytes)
        self.problems: list[str] = []
        """What was skipped and why (corrupt lines, a file that changed), for the delivery report."""
        self.skipped_lines = 0
        self.missing_seqs = 0
        """Records absent between two read ones (the trainer's disk refused them): counted, never silent."""
        self.committed = self._load()
        self.position = self.committed
        self.at_end = False
        """Whether the last :meth:`read` reached the end of the file as it was (a torn tail aside)."""

    def read(self, *, final: bool = False) -> list[AuditRecord]:
        """The next records after :attr:`position` (up to about ``chunk_bytes`` of lines); [] at the end.

        ``final``: the writer is gone, so a last line without its newline is taken (or skipped) now.
        """
        try:
            with open(self.path, "rb") as handle:
                return self._read(handle, final)
        except FileNotFoundError:  # a worker's audit that does not exist yet
            self.at_end = True
            return []

    def commit(self, position: Position | None = None) -> None:
        """Persist ``position`` (default: where reading stands) atomically: a crash leaves old or new."""
        self.committed = position if position is not None else self.position
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        committed = self.committed
        payload = orjson.dumps({"file": self.path.name, "offset": committed.offset, "seq": committed.seq})
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.state_path)

    def behind(self, taken_ns: int) -> tuple[int, float]:
        """What the file holds past the committed position: (records, seconds), the seconds between the
        newest record written and the newest taken (``taken_ns``; 0: none taken yet, then the oldest not
        taken). (0, 0.0) when caught up or unreadable. A stat and the file's last line: cheap enough for
        every metrics collection (the exporter's lag metrics)."""
        committed = self.committed
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size <= committed.offset:
                    return 0, 0.0
                newest = _record(_last_line(handle, size))
                if newest is None or newest.seq <= committed.seq:
                    return 0, 0.0
                if not taken_ns:
                    handle.seek(committed.offset)
                    oldest = _record(handle.readline())
                    taken_ns = oldest.time_ns if oldest is not None else newest.time_ns
        except OSError:
            return 0, 0.0
        return newest.seq - committed.seq, max(0.0, (newest.time_ns - taken_ns) / 1e9)

    def rewind(self) -> None:
        """Back to the last commit: what was read since is read again (its delivery failed)."""
        self.position = self.committed

    # --- internals --------------------------------------------------------------------------------

    def _read(self, handle: BinaryIO, final: bool) -> list[AuditRecord]:
        size = os.fstat(handle.fileno()).st_size
        offset = self._checked_offset(handle, size)
        records: list[AuditRecord] = []
        self.at_end = False
        while not records and not self.at_end:
            if offset >= size:
                self.at_end = True
                break
            handle.seek(offset)
            data = handle.read(self._chunk)
            if not data.endswith(b"\n"):
                data += handle.readline()  # the rest of a line longer than a chunk, or the torn tail
            end = data.rfind(b"\n") + 1
            lines = data[:end].split(b"\n")[:-1]
            if final and end < len(data) and offset + len(data) >= size:
                lines.append(data[end:])  # the writer is gone: its torn last line is all there is
                end = len(data)
            records.extend(self._accept(lines, offset))
            if end == 0:  # only an incomplete last line: wait for its newline
                self.at_end = True
            offset += end
        self.position = Position(offset, records[-1].seq if records else self.position.seq)
        return records

    def _load(self) -> Position:
        if self.state_path is None:
            return Position()
        try:
            state = orjson.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return Position()
        except (OSError, orjson.JSONDecodeError) as error:
            self._problem(f"{self.state_path}: cursor unreadable ({error}); reading from the start")
            return Position()
        offset, seq = (state.get("offset"), state.get("seq")) if isinstance(state, dict) else (None, None)
        if type(offset) is not int or type(seq) is not int or offset < 0 or seq < 0:
            self._problem(f"{self.state_path}: cursor holds no position; reading from the start")
            return Position()
        return Position(offset, seq)

    def _checked_offset(self, handle: BinaryIO, size: int) -> int:
        """The offset to read from: the position's, unless the file no longer fits it (shorter, or the
        byte before is not a line end); then 0, and the seq filter skips what was read already."""
        offset = self.position.offset
        if offset == 0:
            return 0
        if offset <= size:
            handle.seek(offset - 1)
            if handle.read(1) == b"\n":
                return offset
        self._problem(f"{self.path}: changed under the cursor (offset {offset}, size {size}); read again "
                             f"from the start, records up to seq {self.position.seq} skipped")
        return 0

    def _accept(self, lines: list[bytes], offset: int) -> list[AuditRecord]:
        out: list[AuditRecord] = []
        last = self.position.seq
        for raw in lines:
            if not raw or raw.isspace():  # as ``not raw.strip()``, without a copy of each line
                continue
            decoded = decode_line(raw)
            record = AuditRecord.parse(decoded) if isinstance(decoded, dict) else None
            if record is None:
                self.skipped_lines += 1
                self._problem(f"{self.path}: a line near byte {offset} is not a record (torn or corrupt); "
                                     "skipped")
                continue
            if record.seq <= last:  # read before (the file was read again from the start)
                continue
            if record.seq > last + 1:
                self.missing_seqs += record.seq - last - 1
            last = record.seq
            out.append(record)
        return out

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:  # a run of corrupt lines costs a count, not memory
            self.problems.append(text)


TAIL_BYTES = 1 << 16
"""Bytes read from a file's end for its last line (a longer last line: no lag figure this time)."""


def _last_line(handle: BinaryIO, size: int) -> bytes:
    """The file's last complete line (a torn tail is not one yet); b"" when none fits in TAIL_BYTES."""
    start = max(0, size - TAIL_BYTES)
    handle.seek(start)
    tail = handle.read(size - start)
    end = tail.rfind(b"\n")
    if end < 0:
        return b""
    begin = tail.rfind(b"\n", 0, end) + 1
    return tail[begin:end] if begin or start == 0 else b""


def _record(line: bytes) -> AuditRecord | None:
    decoded = decode_line(line) if line.strip() else None
    return AuditRecord.parse(decoded) if isinstance(decoded, dict) else None
