"""The exporter in a process of its own: started by the trainer's ``start()``, watching it by PID.

It ignores Ctrl-C (the terminal's SIGINT is the trainer's to handle; it is in a session of its own
anyway) and ends on SIGTERM by delivering what it has. Its warnings go to its log file and to the
report the trainer reads at finalize.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from lezea_otel.config.settings import resolve_settings
from lezea_otel.exporter.assemble import build_service

NICENESS = 10
"""The exporter runs at a lower CPU priority than the trainer: on a machine whose cores the training
saturates (intra-op threads, DataLoader workers) it takes what the training leaves, and it catches up
while ``finalize_experiment()`` waits for it; on an idle core it makes no difference."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lezea_otel.exporter")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pid", type=int, required=True, help="the trainer's PID, watched")
    parser.add_argument("--options", default="{}", help="the tracker's keyword settings, as JSON")
    parser.add_argument("--prometheus-port", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(OSError):  # a container may forbid it: then the exporter runs as it is
        os.nice(NICENESS)
    options: dict[str, Any] = orjson.loads(args.options)
    settings = resolve_settings(options)
    problems: list[str] = []

    def warn(call: str, problem: str, detail: str) -> None:
        problems.append(f"{call}: {problem}: {detail}")
        logging.getLogger("lezea_otel").warning("%s: %s: %s", call, problem, detail)

    service, _targets = build_service(args.run_dir, settings, trainer_pid=args.pid,
                                      prometheus_port=args.prometheus_port, warn=warn,
                                      info=logging.getLogger("lezea_otel").info)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: service.stop_following())
    service.run(watch=True, problems=problems)
    service.close(settings.shutdown_timeout_s)  # the followers are done: one more scrape, then stop
    service.write_report(problems)
    return 0
