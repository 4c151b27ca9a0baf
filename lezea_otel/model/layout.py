"""Where the audits of one experiment lie in its folder, read back from the folder names alone.

One experiment folder (``runs/<experiment_id>/``) holds, as the trainer wrote them
(``audit.writer.open_audit``): its own audit (a lone run), ``attempt-<n>/`` (a lone run whose id was used
before), ``rank-<r>/`` (a rank of a distributed launch) and ``rank-<r>-attempt-<a>/`` (that rank in a
restarted worker group). Every one of them may hold forked workers' audits in ``workers/<pid>/``. The names
come from ``semconv``; this module only parses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lezea_otel import semconv as names


def _pattern(template: str, field: str) -> str:
    return re.escape(template).replace(re.escape("{" + field + "}"), r"(\d+)")


_RANK = re.compile(_pattern(names.RANK_DIR, "rank") + f"(?:{_pattern(names.ATTEMPT_SUFFIX, 'attempt')})?")
_ATTEMPT = re.compile(_pattern(names.ATTEMPT_DIR, "attempt"))


@dataclass(frozen=True)
class MemberFolder:
    """One process's audit folder in an experiment: its rank (``None``: a lone run) and attempt (0: the
    first; the number in the folder's name, so unique per rank even when a launcher's count repeats)."""

    path: Path
    rank: int | None
    attempt: int


def parse_member(name: str) -> tuple[int | None, int] | None:
    """(rank, attempt) of a member folder's name; ``None`` when the name is no member's."""
    match = _RANK.fullmatch(name)
    if match:
        return int(match[1]), int(match[2] or 0)
    match = _ATTEMPT.fullmatch(name)
    return (None, int(match[1])) if match else None


def has_audit(folder: Path) -> bool:
    return (folder / names.AUDIT_FILE).is_file()


def members(experiment_dir: Path) -> list[MemberFolder]:
    """Every audit folder of the experiment (its own first), by rank then attempt; [] when none."""
    found = [MemberFolder(experiment_dir, None, 0)] if has_audit(experiment_dir) else []
    try:
        children = list(experiment_dir.iterdir())
    except OSError:
        return found
    for child in children:
        parsed = parse_member(child.name)
        if parsed is not None and has_audit(child):
            found.append(MemberFolder(child, *parsed))
    return sorted(found, key=lambda m: (m.rank is not None, m.rank or 0, m.attempt))


def is_member(folder: Path) -> bool:
    """A rank's or an attempt's folder inside an experiment folder (not the experiment itself)."""
    return parse_member(folder.name) is not None and has_audit(folder)


def is_experiment(folder: Path) -> bool:
    """A folder with an audit of its own or in member folders, that is not itself a member's."""
    return not is_member(folder) and bool(members(folder))


def worker_audits(run_dir: Path) -> list[Path]:
    """The audits of the forked workers of one process's run folder, and of their own workers, by pid."""
    found: list[Path] = []
    pending = [run_dir]
    while pending:
        folder = pending.pop()
        try:
            workers = sorted((p for p in (folder / names.WORKERS_DIR).iterdir() if has_audit(p)),
                             key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0))
        except OSError:
            continue
        found.extend(p / names.AUDIT_FILE for p in workers)
        pending.extend(workers)
    return found
