"""The audit's file: it holds whole lines only, and every line that could not be written is counted.

Lines wait in a list and reach the file through ``os.write`` (no ``BufferedWriter``), which gives
two guarantees a buffered file object cannot:

- Reentrancy: a signal handler that records something while a flush is under way on the same
  thread only adds its line to the list, and the interrupted flush writes it too (a
  ``BufferedWriter`` raises ``reentrant call`` there and the line is lost). An exception a handler
  raises in the middle of a write puts the unwritten lines back for the next flush.
- No torn line: a write the disk refuses part-way (full, quota, I/O error) is cut back to its last
  whole line, or, where even that fails, the next write starts on a fresh line, so no later line
  glues onto half a line. The lines it held are lost and counted (:meth:`LineFile.loss`); the
  tracker reports them once, at finalize, and every later write is tried again.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

BUFFER_BYTES = 1 << 16
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class LineFile:
    """Appends whole lines to ``path``; the caller serializes access from threads (the pipeline lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, _FLAGS, 0o644)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flushing = False
        self._close_requested = False
        self._detached = False
        self._fresh_line = _ends_mid_line(path)  # a torn line left by an earlier writer that was killed
        self.lost_lines = 0
        self.lost_bytes = 0
        self.error: str | None = None

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def append(self, line: bytes) -> bool:
        """Queue one line (ending in a newline); True when enough is queued to be worth a flush now."""
        if self._fd is None:  # after close: late calls still reach the audit, one open per line
            self._write_late(line)
            return False
        self._pending.append(line)
        self._pending_bytes += len(line)
        return self._pending_bytes >= BUFFER_BYTES

    def last_is(self, line: bytes) -> bool:
        """Whether ``line`` is the last line queued (this very object: a line is queued once)."""
        return bool(self._pending) and self._pending[-1] is line

    def flush(self, durable: bool = False) -> None:
        """Everything queued to the OS (survives kill -9); ``durable`` also fsyncs (survives a power loss)."""
        if self._flushing:
            return  # re-entered on this thread (a signal handler): the flush under way writes these lines too
        self._flushing = True
        try:
            while self._pending and self._fd is not None:
                self._write_queued(self._fd)
            if durable and self._fd is not None:
                try:
                    os.fsync(self._fd)
                except OSError as error:
                    self._note(error)
        finally:
            self._flushing = False
        if self._close_requested:
            self.close()

    def close(self) -> None:
        if self._flushing:
            self._close_requested = True  # the flush under way closes the file when it is done
            return
        self._close_requested = False
        if self._fd is None:
            return
        self.flush(durable=True)  # always at finalize, whatever the policy
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as error:
                self._note(error)

    def detach_after_fork(self) -> None:
        """In a forked child: the queued lines are the parent's, and so is the file; the copied
        descriptor is pointed at /dev/null so that nothing from the child ever reaches it."""
        self._pending, self._pending_bytes, self._flushing = [], 0, False
        self._detached = True
        if self._fd is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._fd)
            os.close(devnull)

    def loss(self) -> str:
        """What could not be written, for one warning; empty when nothing was lost."""
        if not self.lost_lines:
            return ""
        return (f"{self.lost_lines} line{'s' if self.lost_lines != 1 else ''} ({self.lost_bytes} bytes) of "
                f"{self.path} were lost ({self.error}); every line in the file is whole")

    def _write_late(self, line: bytes) -> None:
        if self._detached:
            return
        try:
            fd = os.open(self.path, _FLAGS, 0o644)
        except OSError as error:
            self._lose(line, error)
            return
        try:
            self._pending.append(line)
            self._write_queued(fd)
        finally:
            os.close(fd)

    def _write_queued(self, fd: int) -> None:
        """One write of the lines queued now. Lines leave the queue only once they are in the file
        (the file's size says how far a write got, even when an exception cut it short)."""
        queued = self._pending
        count = len(queued)
        data = b"".join(queued[:count])
        start: int | None = None
        try:
            if self._fresh_line:
                _write_all(fd, b"\n")
                self._fresh_line = False
            start = os.fstat(fd).st_size
            _write_all(fd, data)
        except OSError as error:
            whole = self._settle(fd, data, start)
            self._lose(data[whole:], error)
            del queued[:count]
        except BaseException:  # a signal handler raised (KeyboardInterrupt, SystemExit) mid-write
            del queued[:data.count(b"\n", 0, self._settle(fd, data, start))]
            raise
        else:
            del queued[:count]
        self._pending_bytes = sum(map(len, queued))

    def _settle(self, fd: int, data: bytes, start: int | None) -> int:
        """How much of ``data`` is in the file as whole lines; half a line after them is cut off."""
        if start is None:
            return 0  # the file could not even be looked at: nothing of ``data`` was written
        try:
            written = min(max(os.fstat(fd).st_size - start, 0), len(data))
        except OSError:
            self._fresh_line = True
            return 0
        whole = data.rfind(b"\n", 0, written) + 1
        if written > whole:
            try:
                os.ftruncate(fd, start + whole)
            except OSError:
                self._fresh_line = True  # it stays; the next line starts on a line of its own
        return whole

    def _lose(self, data: bytes, error: OSError) -> None:
        self.lost_lines += data.count(b"\n")
        self.lost_bytes += len(data)
        self._note(error)

    def _note(self, error: OSError) -> None:
        if self.error is None:
            self.error = f"{type(error).__name__}: {error}"


def _write_all(fd: int, data: bytes) -> None:
    written = 0
    while written < len(data):
        count = os.write(fd, memoryview(data)[written:])
        if count <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written += count


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:
        return False
