"""How this process joins its experiment: its root span, its ``/metrics`` port, and the environment that
makes a child process join too.

The ranks of one launch derive the same trace (``config.launch``): rank 0's root is the ``experiment``
span, each other rank's root a lane under it, a child process's root a span under the one open in its
parent. The port is ``base + LOCAL_RANK``, or the next one that no other run on this host holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lezea_otel.config.launch import Launch, rank_span_id, shared_trace
from lezea_otel.config.settings import Settings
from lezea_otel.util import ports, values


@dataclass(frozen=True)
class Root:
    """The run's root span: its ids, its parent, and what it is."""

    trace_id: int
    span_id: int
    parent_span_id: int
    rank_lane: bool
    """A rank other than 0: its root is its lane under rank 0's ``experiment`` span."""
    child: bool
    """A process started with ``child_env()``: its root is under the span open in the parent."""


def root_of(settings: Settings, launch: Launch, experiment_id: str, fresh: tuple[int, int]) -> Root:
    """``fresh``: random ids, used where nothing is shared (a lone run, a child's own span)."""
    shared = shared_trace(settings, launch, experiment_id)
    child = launch.child_of is not None
    if shared is None:
        return Root(*fresh, 0, False, child)
    trace_id, root_span_id, parent_span_id = shared
    if child:
        return Root(trace_id, fresh[1], parent_span_id, False, True)
    if not launch.owns_root:
        return Root(trace_id, rank_span_id(trace_id, experiment_id, launch), root_span_id, True, False)
    return Root(trace_id, root_span_id, parent_span_id, False, False)


def metrics_port(launch: Launch, addr: str, base: Any, warn: Callable[[str, str], None],
                 say: Callable[[str], None]) -> ports.Reservation | None:
    """The ``/metrics`` port of this rank (``base``: ``start(prometheus_port=...)``), held until the run
    ends; a moved port is said (``say``, the console line), never warned; ``None`` for ``None`` or ``0``,
    and (one warning) for a base that is no port or when every candidate is taken."""
    if base is None or base == 0:
        return None
    if isinstance(base, bool) or not isinstance(base, int) or not 0 < base < 65536:
        warn("prometheus_port must be a port number, None or 0",
             f"got {values.describe(base)}; /metrics is off")
        return None
    local = launch.local_rank or 0
    wanted = base + local
    held = ports.reserve(addr, base, local, launch.local_world_size or launch.world_size or 1)
    if held is None:
        warn(f"no port from {wanted} on can be served on {addr}",
             f"{ports.TRIES} tried; the run goes on without /metrics")
    elif held.port != wanted:
        say(f"port {wanted} is taken on {addr}; /metrics is on port {held.port}")
    return held


def child_environment(base: Mapping[str, str] | None, experiment_id: str, run_dir: Path, trace_id: int,
                      span_id: int, warn: Callable[[str, str], None]) -> dict[str, str]:
    """``base`` (default: this process's environment) plus what a child's tracker joins with. A ``base``
    that is not a mapping of text costs itself (one warning): this process's environment is used."""
    env = dict(os.environ)
    if base is not None:
        try:
            env = {key: value for key, value in base.items() if type(key) is str and type(value) is str}
            if len(env) != len(base):
                warn("base holds keys or values that are not text", "they were left out")
        except Exception as error:  # noqa: BLE001 - a user's mapping whose items() or len() raises
            warn("base is not a mapping of text", f"{type(error).__name__}; this environment is used")
            env = dict(os.environ)
    experiment_dir = next((folder for folder in (run_dir, *run_dir.parents) if folder.name == experiment_id),
                          run_dir)
    env.update({"LEZEA_EXPERIMENT_ID": experiment_id, "LEZEA_RUNS_DIR": str(experiment_dir.parent),
                "LEZEA_PARENT_RUN": run_dir.relative_to(experiment_dir).as_posix()})
    if trace_id and span_id:
        env["TRACEPARENT"] = f"00-{trace_id:032x}-{span_id:016x}-01"
    return env
