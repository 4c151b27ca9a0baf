"""A free port for ``/metrics``: the ranks of a node and a second run on the same host never collide.

Rank ``r`` of a node serves on ``base + r``; a port already taken (another run, another program) moves
that rank on by the node's rank count, so it never lands on a port a sibling rank is about to take.
Two runs starting at the same moment cannot both pick a port before either binds it: each run holds
an advisory lock (``flock``) on a per-port file in the temporary folder for as long as it lives, and
skips ports another run holds. A port is free when it is not locked and a server could bind it now
(as the HTTP server will, with ``SO_REUSEADDR``: ``TIME_WAIT`` is free, a listener is not).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from pathlib import Path

TRIES = 64
"""Ports tried (``base + r``, then one node's rank count further each time) before giving up."""
LOCKS = Path(tempfile.gettempdir()) / "lezea-otel-ports"


def candidates(base: int, local_rank: int, stride: int) -> list[int]:
    """The ports a rank tries, in order (all below 65536)."""
    start, step = base + local_rank, max(1, stride)
    return [port for port in range(start, start + step * TRIES, step) if port < 65536]


def bindable(addr: str, port: int) -> bool:
    """Whether a server could bind ``addr:port`` now."""
    try:
        infos = socket.getaddrinfo(addr or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return False
    family, kind, protocol, _name, address = infos[0]
    with contextlib.closing(socket.socket(family, kind, protocol)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _lock(port: int) -> int | None:
    """A held lock on ``port``'s file (its descriptor), or ``None`` when another run holds it. Where no lock
    can be made at all (a read-only temporary folder), every port counts as unlocked: -1."""
    try:
        LOCKS.mkdir(mode=0o1777, exist_ok=True)
        fd = os.open(LOCKS / str(port), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Reservation:
    """The port a run serves ``/metrics`` on, held (locked) until :meth:`release`."""

    def __init__(self, port: int, fd: int) -> None:
        self.port = port
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def reserve(addr: str, base: int, local_rank: int = 0, stride: int = 1) -> Reservation | None:
    """The first port of :func:`candidates` no other run holds and a server could bind, now held for this
    run; ``None`` when all are taken."""
    for port in candidates(base, local_rank, stride):
        fd = _lock(port)
        if fd is None:
            continue
        if bindable(addr, port):
            return Reservation(port, fd)
        if fd >= 0:
            os.close(fd)
    return None
