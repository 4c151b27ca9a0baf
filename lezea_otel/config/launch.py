"""Who this process is among the processes of one run, from what its launcher put in the environment.

torchrun/torchelastic, SLURM, Open MPI and PMI/PMIx each tell every process its rank, the world size and
an id of the launch (``TORCHELASTIC_RUN_ID``, the SLURM job and step, the PMIx namespace). Every rank
derives the same experiment id and trace id from that launch id, so the ranks of one launch are one
experiment and one trace with no communication between them at all. ``LEZEA_EXPERIMENT_ID`` wins over
the derivation; without a launcher a run is a fresh UUID4, as the spec says.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.config.settings import Settings

NAMESPACE = uuid.UUID("6b1f0a52-3c1e-5d0e-9b8a-1e5a0c7d2f41")
"""UUID5 namespace of the ids derived here (an arbitrary constant: it only has to be the same everywhere)."""

_LAUNCHERS = {"RANK": "torchrun", "SLURM_PROCID": "slurm", "OMPI_COMM_WORLD_RANK": "mpi", "PMIX_RANK": "pmix",
              "PMI_RANK": "pmi", "LEZEA_RANK": "lezea", "WORLD_SIZE": "torchrun", "SLURM_NTASKS": "slurm",
              "OMPI_COMM_WORLD_SIZE": "mpi", "PMI_SIZE": "pmi", "LEZEA_WORLD_SIZE": "lezea"}
"""The launcher, by the variable the rank (else the world size) came from."""
_UNSET_RUN_IDS = frozenset({"none", ""})
"""torchrun's ``--rdzv-id`` default on several nodes: not an id of the launch."""

_ordinals: dict[str, int] = {}


@dataclass(frozen=True)
class Launch:
    """The rank identity of this process; every field ``None`` where no launcher said."""

    launcher: str | None
    rank: int | None
    local_rank: int | None
    world_size: int | None
    local_world_size: int | None
    node_rank: int | None
    role_rank: int | None
    job_id: str | None
    """The launch: the same text in every process of it (``TORCHELASTIC_RUN_ID``, ``<job>.<step>``...)."""
    attempt: int
    array: str | None = None
    child_of: str | None = None
    """A process started with ``tracker.child_env()``: its parent's folder inside the experiment's."""

    @property
    def distributed(self) -> bool:
        """A rank of a launch: its files go into ``rank-<r>/`` of the experiment's folder."""
        return self.rank is not None

    @property
    def owns_root(self) -> bool:
        """Rank 0 (or a process that is no rank) owns the experiment's root span; a child process never."""
        return not self.rank and self.child_of is None

    def member_dir(self) -> str:
        """This rank's folder inside the experiment's (``""``: the folder itself)."""
        if self.child_of is not None:
            return str(PurePosixPath(self.child_of, names.CHILDREN_DIR, str(os.getpid())))
        if not self.distributed:
            return ""
        folder = names.RANK_DIR.format(rank=self.rank)
        return folder + (names.ATTEMPT_SUFFIX.format(attempt=self.attempt) if self.attempt else "")

    def attributes(self) -> dict[str, Any]:
        """The ``dl.*`` resource attributes: on every span, metric point and log record of this process."""
        given = {names.DL_RANK: self.rank, names.DL_LOCAL_RANK: self.local_rank,
                 names.DL_WORLD_SIZE: self.world_size, names.DL_LOCAL_WORLD_SIZE: self.local_world_size,
                 names.DL_NODE_RANK: self.node_rank, names.DL_ROLE_RANK: self.role_rank,
                 names.DL_LAUNCHER: self.launcher, names.DL_JOB_ID: self.job_id}
        if self.distributed or self.attempt:
            given[names.DL_RESTART_ATTEMPT] = self.attempt
        return {key: value for key, value in given.items() if value is not None}

    def as_record(self) -> dict[str, Any]:
        """For the ``experiment_start`` record (readers merge the ranks of a run with it)."""
        return {"launcher": self.launcher, "rank": self.rank, "local_rank": self.local_rank,
                "world_size": self.world_size, "local_world_size": self.local_world_size,
                "node_rank": self.node_rank, "job_id": self.job_id, "attempt": self.attempt,
                **({"array": self.array} if self.array else {})}


def launch_of(settings: Settings) -> Launch:
    """The launch as the settings resolved it (each variable checked there, its problems reported there)."""
    launcher = _LAUNCHERS.get(settings.sources.get("rank", ""))
    run_id = settings.launch_id if settings.launch_id not in _UNSET_RUN_IDS else None
    job = settings.slurm_job
    if run_id is None and job is not None:
        run_id = f"{job}.{settings.slurm_step}" if settings.slurm_step is not None else job
    if launcher is None and settings.world_size is not None:  # the rank was unusable: the launcher is known
        launcher = _LAUNCHERS.get(settings.sources.get("world_size", ""))
    array = f"{settings.slurm_array}_{settings.slurm_array_task}" if settings.slurm_array else None
    return Launch(launcher, settings.rank, settings.local_rank, settings.world_size,
                  settings.local_world_size, settings.node_rank, settings.role_rank, run_id,
                  settings.restart_attempt, array, _child_of(settings.parent_run))


def _child_of(parent_run: str | None) -> str | None:
    """``LEZEA_PARENT_RUN`` as a relative folder that stays inside the experiment's (else ignored)."""
    if parent_run is None:
        return None
    parts = [part for part in PurePosixPath(parent_run).parts if part not in ("", ".", "/")]
    return "/".join(parts) if ".." not in parts else None


def derive_experiment_id(settings: Settings, launch: Launch, experiment_name: str) -> str:
    """``LEZEA_EXPERIMENT_ID``; else, in a launch with an id, a UUID5 of (launcher, launch id, experiment
    name, how many trackers of that name this process made before): the same in every rank, different
    for a second tracker; else a fresh UUID4."""
    if settings.experiment_id:
        return settings.experiment_id
    if launch.job_id is None:
        return str(uuid.uuid4())
    key = f"{launch.launcher}:{launch.job_id}:{experiment_name}"
    ordinal = _ordinals.get(key, 0)
    _ordinals[key] = ordinal + 1
    return str(uuid.uuid5(NAMESPACE, f"{key}#{ordinal}" if ordinal else key))


def shared_trace(settings: Settings, launch: Launch, experiment: str) -> tuple[int, int, int] | None:
    """(trace id, root span id, the root's parent span id) that every process of the experiment derives
    alike; ``None`` for a lone run without a given id or trace context (random ids, as the SDK's).

    ``TRACEPARENT`` wins: the experiment is a child of that span, in its trace."""
    parent = 0
    if settings.traceparent:
        _version, trace_text, span_text, _flags = settings.traceparent.split("-")[:4]
        trace_id, parent = int(trace_text, 16), int(span_text, 16)
    elif launch.job_id is not None or settings.experiment_id:
        trace_id = derived(experiment, "trace", 128)
    else:
        return None
    return trace_id, derived(f"{trace_id:032x}/{experiment}", "root", 64), parent


def rank_span_id(trace_id: int, experiment: str, launch: Launch) -> int:
    """The span a rank other than 0 nests its spans under (one lane per rank and attempt in the trace)."""
    return derived(f"{trace_id:032x}/{experiment}", f"rank/{launch.rank}/{launch.attempt}", 64)


def exports_spans(span_ranks: str, launch: Launch, experiment: str) -> bool:
    """Whether this rank's scope and phase spans are exported (``LEZEA_SPAN_RANKS``); a process that is no
    rank always exports them. A share picks the same ranks in every process of the experiment."""
    if launch.rank is None or span_ranks == "all" or launch.rank == 0:
        return True
    if span_ranks == "rank0":
        return False
    if span_ranks == "node":
        return not launch.local_rank
    return derived(experiment, f"spans/{launch.rank}", 32) < float(span_ranks) * 2**32


def derived(seed: str, what: str, bits: int) -> int:
    """A non-zero id of ``bits`` bits, the same wherever ``seed`` and ``what`` are."""
    value = uuid.uuid5(NAMESPACE, f"{seed}/{what}").int
    return (value >> (128 - bits)) or 1
