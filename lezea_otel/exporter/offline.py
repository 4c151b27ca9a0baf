"""``lezea-otel export RUN``: the exporter over a finished or crashed run, to a collector, resumable.

The same follower as the live exporter, with a cursor of its own per collector endpoint (kept in
``exporter/``): run twice, the second run sends nothing; interrupted, the next run goes on where the
collector's last acknowledgement left it. A run without its end record whose trainer is gone is
completed as the live exporter would: open spans truncated, the root ``crashed``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._internal import names
from .._internal.settings import Settings
from .assemble import otlp_destination
from .follow import Follower

Warn = Callable[[str, str, str], None]


class ExportError(Exception):
    """The run cannot be exported now (no endpoint, a collector that refuses or cannot be reached)."""


@dataclass
class ExportResult:
    sent: dict[str, int] = field(default_factory=dict)
    """Items per signal the collector took (metrics: batches)."""
    problems: list[str] = field(default_factory=list)


def state_name(endpoint: str) -> str:
    """Cursor files of one collector: a different endpoint is another destination, sent everything."""
    return "export-" + hashlib.sha256(endpoint.rstrip("/").encode()).hexdigest()[:12]


def export_run(run_dir: Path, settings: Settings, *, crashed: bool, everything: bool = False,
               progress: Callable[[int], None] | None = None) -> ExportResult:
    """Send what the collector at ``settings``' endpoint has not acknowledged yet.

    Args:
        crashed: the run has no end record and its trainer is gone: complete it as crashed.
        everything: forget this endpoint's cursor and send the whole run again.
    Raises:
        ExportError: no endpoint configured, or the collector did not take a batch.
    """
    problems: list[str] = []

    def warn(call: str, problem: str, detail: str) -> None:
        problems.append(f"{problem}: {detail}")

    destination, described = otlp_destination(settings, warn)
    if destination is None:
        raise ExportError("; ".join(problems) or "no OTLP endpoint: pass --endpoint URL or set "
                          "OTEL_EXPORTER_OTLP_ENDPOINT")
    endpoint = settings.endpoint or described or "otlp"
    state_dir = run_dir / names.EXPORTER_DIR / state_name(endpoint)
    if everything:
        shutil.rmtree(state_dir, ignore_errors=True)
    follower = Follower(run_dir, destination, state_dir=state_dir, metric_interval_s=float("inf"))
    try:
        while True:
            before = sum(counts.exported for counts in destination.counts.values())
            moved = follower.poll(final=True)
            if progress is not None:
                progress(sum(counts.exported for counts in destination.counts.values()) - before)
            held = follower.report()["signals"]["traces"].get("held", 0) or \
                follower.report()["signals"]["logs"].get("held", 0)
            if held:
                raise ExportError(f"the collector at {endpoint} did not take a batch (unreachable or refusing); "
                                  "what it took is recorded")
            if not moved:
                break
        follower.finish(crashed)
        if follower.report()["signals"]["traces"].get("held", 0):
            raise ExportError(f"the collector at {endpoint} did not take the crashed run's last spans")
    finally:
        destination.shutdown()
    result = ExportResult(problems=[*problems, *follower.report()["problems"]])
    for signal, counts in destination.counts.items():
        if counts.exported:
            result.sent[signal] = counts.exported
    return result
