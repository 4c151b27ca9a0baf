"""``lezea-otel export RUN`` (alias ``replay``): the exporter over a finished or crashed run, to a collector.

The same follower as the live exporter, with the same cursor files for the same collector (see
:func:`~lezea_otel.exporter.assemble.collector_key`): after an outage the export sends exactly what the
live exporter could not deliver, with the records' original timestamps; run twice, the second run
sends nothing; interrupted, the next run goes on where the collector's last acknowledgement left it.
Another collector (``--endpoint``) has cursors of its own and gets the whole run. A run without its
end record whose trainer is gone is completed as the live exporter would: open spans truncated, the
root ``crashed``.

A collector that refuses everything (down, 503, ``UNAVAILABLE``) ends the export with an error, what it
took recorded. One that takes data but refuses a batch for good (HTTP 400) costs that batch's refused
items only: three refusals in a row, then the halves that go through are sent and the rest counted
``rejected`` (the audit keeps them; ``--all`` sends the whole run again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lezea_otel import semconv as names
from lezea_otel.config.settings import Settings
from lezea_otel.exporter.assemble import otlp_destination
from lezea_otel.exporter.follow import Follower

SPAN_METRICS_SLACK_S = 30.0
"""Tempo's metrics-generator makes span metrics only of spans that ended at most this long before they
reach it (its ingestion slack): a replayed run gets none (``collector/tempo.yaml``)."""
STACK_KEEPS_S = 30 * 86400.0
"""How far back the shipped stack (``collector/``) keeps and still takes data: Prometheus's retention and
out-of-order window, Loki's retention and oldest accepted line, Tempo's block retention."""
REFUSED_FOR_GOOD_AFTER = 3
"""Refusals in a row of one batch, the collector taking an empty request, before it is split (no
backoff here: someone is waiting at the terminal, and the collector answered)."""


def replay_notices(start_ns: int, now_ns: int) -> list[tuple[str, str]]:
    """What the shipped stack does with a run that started at ``start_ns``, sent now: (level, text) lines
    for the user, before the export (every signal keeps its records' own times)."""
    age_s = (now_ns - start_ns) / 1e9
    notices = []
    if age_s > STACK_KEEPS_S:
        notices.append(("warning", f"the run started {age_s / 86400:.0f} days ago, older than the "
                        f"{STACK_KEEPS_S / 86400:.0f} days the shipped stack keeps: Prometheus refuses its "
                        "metrics after the Collector took them (counted there as "
                        "otelcol_exporter_send_failed_metric_points), so does Loki with its logs, and Tempo "
                        "deletes its spans at its next retention pass; the run's audit and OTLP files keep "
                        "everything"))
    if age_s > SPAN_METRICS_SLACK_S:
        notices.append(("note", "Tempo makes no span metrics of spans this old (they end more than "
                        f"{SPAN_METRICS_SLACK_S:.0f} s before they arrive): the Slow phases dashboard shows "
                        "this run from lezea_phase_duration, at its own times"))
    return notices


class ExportError(Exception):
    """The run cannot be exported now (no endpoint, a collector that cannot be reached or takes nothing)."""


@dataclass
class ExportResult:
    sent: dict[str, int] = field(default_factory=dict)
    """Items per signal the collector took (metrics: batches)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Items per signal the collector refused for good while taking the rest: skipped."""
    problems: list[str] = field(default_factory=list)


def export_run(run_dir: Path, settings: Settings, *, crashed: bool, everything: bool = False,
               progress: Callable[[int], None] | None = None) -> ExportResult:
    """Send what the collector configured in ``settings`` has not acknowledged yet.

    Args:
        crashed: the run has no end record and its trainer is gone: complete it as crashed.
        everything: forget this collector's cursors and send the whole run again.
        progress: called with the number of items taken after each round.
    Raises:
        ExportError: no endpoint configured, or the collector took nothing of a batch.
    """
    problems: list[str] = []

    def warn(_call: str, problem: str, detail: str) -> None:
        problems.append(f"{problem}: {detail}")

    destination, described = otlp_destination(settings, warn)
    if destination is None:
        raise ExportError("; ".join(problems) or "no OTLP endpoint: pass --endpoint URL or set "
                          "OTEL_EXPORTER_OTLP_ENDPOINT")
    state_dir = run_dir / names.EXPORTER_DIR
    if everything:
        for state in state_dir.glob(f"{destination.key}-*.json"):
            state.unlink(missing_ok=True)
    follower = Follower(run_dir, destination, state_dir=state_dir, metric_interval_s=float("inf"),
                        refused_for_good_after=REFUSED_FOR_GOOD_AFTER)

    def taken() -> int:
        return sum(counts.exported for counts in destination.counts.values())

    try:
        while True:
            before = taken()
            moved = follower.poll(final=True)
            if progress is not None:
                progress(taken() - before)
            if follower.failing and not follower.refused:
                raise ExportError(f"the collector ({described}) is unreachable or takes nothing now; "
                                  "what it took is recorded")
            if not moved and not follower.failing:
                break
        follower.finish(crashed)
        if follower.failing:
            raise ExportError(f"the collector ({described}) did not take the crashed run's last spans")
    finally:
        destination.shutdown()
    result = ExportResult(problems=[*problems, *follower.report()["problems"]])
    for signal, counts in destination.counts.items():
        if counts.exported:
            result.sent[signal] = counts.exported
        if counts.rejected:
            result.rejected[signal] = counts.rejected
    return result
