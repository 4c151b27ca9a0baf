"""One audit file as a follower reads it: its cursor, its converter, and what was delivered in part.

Resumed (a new exporter process, ``lezea-otel export``), the converter's state is rebuilt from the
records before the committed cursor, whose output was delivered already, and reading goes on from
there: nothing acknowledged is sent twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from lezea_otel.audit.record import Kind
from lezea_otel.exporter.convert import Batch, RunConverter
from lezea_otel.exporter.cursor import AuditCursor, Position
from lezea_otel.exporter.records import AuditRecord
from lezea_otel.exporter.spans import Windows

_END = Kind.EXPERIMENT_END.value  # plain text: compared with every record read
MAX_CHUNKS_PER_POLL = 8
"""Chunks (about 1 MiB each) read per source and poll: a long backlog goes out as several batches."""


class Source:
    """One audit file: its cursor and converter, resumed from the committed position.

    A batch whose spans were taken and whose logs were not (the collector died between the two
    requests) leaves the cursor where it was; ``taken`` (persisted beside the cursor) says, per signal,
    the record through which that signal was delivered anyway, so a restarted follower reading those
    records again does not send their spans twice."""

    def __init__(self, path: Path, state_path: Path | None, windows: Windows | None = None) -> None:
        self.cursor = AuditCursor(path, state_path)
        self.converter = RunConverter(windows)
        self.ended = False
        """Its ``experiment_end`` was read."""
        self.end_ns: int | None = None
        """The time of its ``experiment_end`` record (the trainer's finalize began then)."""
        self.taken_path = state_path.with_suffix(".taken.json") if state_path is not None else None
        self.taken = self._load_taken()
        if self.cursor.committed.seq:
            self._catch_up_state(path, self.cursor.committed)
        self.taken_ns = self.converter.last_time_ns
        """The time of the newest record delivered (committed): how far behind the destination is."""

    def _catch_up_state(self, path: Path, committed: Position) -> None:
        replay = AuditCursor(path)
        while True:
            records = [r for r in replay.read() if r.seq <= committed.seq]
            self.converter.skip(records)
            for record in records:
                if record.kind == Kind.EXPERIMENT_END:
                    self.ended, self.end_ns = True, record.time_ns
            if not records or replay.position.seq >= committed.seq:
                break

    def read(self, final: bool) -> Batch:
        batch = Batch()
        for _ in range(MAX_CHUNKS_PER_POLL):
            records = self.cursor.read(final=final)
            if not records:
                break
            for record in records:
                if record.kind == _END:
                    self.ended, self.end_ns = True, record.time_ns
            batch.extend(self._feed(records) if self.taken else self.converter.feed(records))
        return batch

    def _feed(self, records: list[AuditRecord]) -> Batch:
        """Records some of whose output was delivered already: fed in stretches of the same marks, and
        each stretch's output without the signals taken through it."""
        def taken(record: AuditRecord) -> frozenset[str]:
            return frozenset(signal for signal, seq in self.taken.items() if seq >= record.seq)

        batch, start = Batch(), 0
        while start < len(records):
            marks, end = taken(records[start]), start + 1
            while end < len(records) and taken(records[end]) == marks:
                end += 1
            part = self.converter.feed(records[start:end])
            batch.extend(Batch([] if "traces" in marks else part.spans, [] if "logs" in marks else part.logs))
            start = end
        return batch

    def mark_taken(self, signal: str, seq: int) -> None:
        """``signal`` of the records through ``seq`` was delivered, the cursor not committed yet."""
        self.taken[signal] = max(seq, self.taken.get(signal, 0))
        if self.taken_path is not None:
            self.taken_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.taken_path.with_name(self.taken_path.name + ".tmp")
            temporary.write_bytes(orjson.dumps(self.taken))
            os.replace(temporary, self.taken_path)

    def committed(self, position: Position) -> None:
        """The cursor was committed at ``position``: marks it passed are done with. Nothing past it was
        read (a batch is held until taken), so the converter's newest record is the newest delivered."""
        self.taken_ns = self.converter.last_time_ns
        if self.taken and position.seq >= max(self.taken.values()):
            self.taken = {}
            if self.taken_path is not None:
                self.taken_path.unlink(missing_ok=True)

    def _load_taken(self) -> dict[str, int]:
        if self.taken_path is None:
            return {}
        try:
            marks = orjson.loads(self.taken_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}  # none (the usual case), or unreadable: sent again, never lost
        committed = self.cursor.committed.seq
        return {signal: seq for signal, seq in marks.items() if signal in ("traces", "logs")
                and type(seq) is int and seq > committed} if isinstance(marks, dict) else {}
