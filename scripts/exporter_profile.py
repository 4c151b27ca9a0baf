"""What the exporter costs per audit record: CPU µs per record of each kind, and a profile of its hot spots.

    .venv/bin/python scripts/exporter_profile.py                # 20 scopes x 500 batches, ~50k records
    .venv/bin/python scripts/exporter_profile.py --batches 100  # quicker

Real audits are written through the public API (``LEZEA_EXPORTER=none``: nothing exports while they
are written): the training loop (per batch, 4 phases and a training step, in builder scopes), and the
same loop with only its phases, only its steps, only its (empty) scopes, for the cost of each kind.
The exporter then follows each as the live one does (``build_service``: the ``otlp/`` files, the
observers and their per-phase resource windows): the audit grows by ``--chunk`` records between two
polls (the trainer's batches), each poll read, converted, delivered and committed. CPU is this
process's (``time.process_time``: the observers' sampler thread included). Not a test: the figures
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time
from pathlib import Path

os.environ["LEZEA_EXPORTER"] = "none"
os.environ.setdefault("LEZEA_QUIET", "1")

from lezea_otel import ExperimentTracker  # noqa: E402
from lezea_otel import semconv as names  # noqa: E402
from lezea_otel.config.settings import resolve_settings  # noqa: E402
from lezea_otel.exporter.assemble import build_service  # noqa: E402

PHASES = ("data", "forward", "backward", "optimizer")
CASES = {"loop": (PHASES, True, 1), "phase": (PHASES, False, 1), "training_step": ((), True, 4),
         "scope_start/scope_end": ((), False, 2)}
"""Per case: the phases of each batch, whether it logs a training step, and more batches for the cases
with fewer records each (every case then has about as many records)."""


def write_audit(runs: Path, scopes: int, batches: int, phases: tuple[str, ...], step: bool) -> Path:
    """One run: ``scopes`` builder scopes of ``batches`` batches; with neither phases nor a step, one
    empty network scope per batch."""
    tracker = ExperimentTracker("exporter-profile", purpose="profile", tags=["bench"], runs_dir=runs)
    tracker.start(prometheus_port=None)
    number = 0
    for builder in range(scopes):
        with tracker.builder_scope(str(builder)):
            for _batch in range(batches):
                for phase in phases:
                    with tracker.span(phase):
                        pass
                if step:
                    number += 1
                    tracker.log_training_step(number, {"loss": 1.0 / number, "acc": number / (number + 1.0)})
                if not phases and not step:
                    with tracker.network_scope("net"):
                        pass
    tracker.finalize_experiment()
    return tracker.run_dir


def follow(source_dir: Path, work: Path, chunk: int) -> tuple[float, int]:
    """The local follower over a copy of the audit that grows ``chunk`` lines at a time: CPU s, records."""
    run_dir = work / source_dir.name
    run_dir.mkdir(parents=True)
    lines = (source_dir / names.AUDIT_FILE).read_bytes().splitlines(keepends=True)
    service, _targets = build_service(run_dir, resolve_settings({}), trainer_pid=os.getpid(),
                                      warn=lambda *problem: print("warning:", *problem), info=lambda _: None)
    follower = service.local
    spent = 0.0
    with open(run_dir / names.AUDIT_FILE, "ab") as audit:
        for start in range(0, len(lines), chunk):
            audit.write(b"".join(lines[start:start + chunk]))
            audit.flush()
            began = time.process_time()
            follower.poll()
            spent += time.process_time() - began
    began = time.process_time()
    follower.finish(False)
    service.stop_observers()
    follower.destination.shutdown()
    return spent + time.process_time() - began, len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scopes", type=int, default=20)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=256, help="records appended between two polls")
    parser.add_argument("--rounds", type=int, default=3, help="follows per case (the best is shown)")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lezea-exporter-profile-") as folder:
        root = Path(folder)
        audits = {case: write_audit(root / "runs" / str(n), args.scopes, args.batches * more, phases, step)
                  for n, (case, (phases, step, more)) in enumerate(CASES.items())}
        empty = write_audit(root / "runs" / "empty", 0, 0, (), False)

        def best(audit: Path, label: str) -> tuple[float, int]:
            return min(follow(audit, root / "follow" / f"{label}-{n}".replace("/", "_"), args.chunk)
                       for n in range(args.rounds))

        fixed, few = best(empty, "empty")  # the service, the observers' start, the last metrics
        print(f"CPU µs per record (read, convert, write otlp/ files, commit; {args.chunk} records per poll; "
              f"best of {args.rounds}, less the {fixed * 1e3:.0f} ms of a run without records):")
        for case, audit in audits.items():
            spent, count = best(audit, case)
            print(f"  {case:<22} {(spent - fixed) / (count - few) * 1e6:7.1f}   ({count} records)")
        profiler = cProfile.Profile()
        profiler.enable()
        follow(audits["loop"], root / "profiled", args.chunk)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
        print(f"\nloop, by own time (cProfile):\n{out.getvalue()}")


if __name__ == "__main__":
    main()
