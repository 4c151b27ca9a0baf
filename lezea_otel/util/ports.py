"""A free port for ``/metrics``: the ranks of a node and a second run on the same host never collide.

Rank ``r`` of a node serves on ``base + r``; a port already taken (another run, another program) moves
that rank on by the node's rank count, so it never lands on a port a sibling rank is about to take.
Checked by binding as the HTTP server will (``SO_REUSEADDR``: a port in ``TIME_WAIT`` is free, a
listening one is not), then released for the server to bind.
"""

from __future__ import annotations

import contextlib
import socket

TRIES = 64
"""Ports tried (``base + r``, then one node's rank count further each time) before giving up."""


def candidates(base: int, local_rank: int, stride: int) -> list[int]:
    """The ports a rank tries, in order (all below 65536)."""
    start, step = base + local_rank, max(1, stride)
    return [port for port in range(start, start + step * TRIES, step) if port < 65536]


def free(addr: str, port: int) -> bool:
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


def first_free(addr: str, base: int, local_rank: int = 0, stride: int = 1) -> int | None:
    """The first port of :func:`candidates` a server could bind, or ``None`` when all are taken."""
    return next((port for port in candidates(base, local_rank, stride) if free(addr, port)), None)
