"""What every ``lezea-otel`` command shares: the consoles, number and time formats, opening a run."""

from __future__ import annotations

import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from lezea_otel.analysis.experiment import Experiment, load_experiment
from lezea_otel.analysis.runs import RunNotFound, resolve_run
from lezea_otel.config.settings import resolve_settings

_WIDTH = None if sys.stdout.isatty() else 160  # pipes and CI logs get wide tables, not 80 columns
# User text (ids, comments, config) is printed as written: no markup ("[/x]" would raise), no ":a:" emoji.
console = Console(highlight=False, soft_wrap=True, width=_WIDTH, emoji=False, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH, emoji=False, markup=False)

runs_dir_option = click.option("--runs-dir", envvar="LEZEA_RUNS_DIR", default=None,
                               help="Folder holding run folders (default: LEZEA_RUNS_DIR or ./runs).")


def say(target: Console, label: str, style: str, rest: str) -> None:
    """A styled label (``error:``, ``ok``) and plain text after it."""
    target.print(Text.assemble((label, style), rest))


def runs_dir(value: str | None) -> Path:
    return Path(value) if value else resolve_settings({}).runs_dir


def load(run: str, folder: str | None) -> Experiment:
    """The experiment RUN names (all of its ranks and attempts; a path to one rank's folder: that rank),
    or exit 2 naming close matches; the first unreadable line of any member is warned about."""
    try:
        loaded = load_experiment(resolve_run(run, runs_dir(folder)))
    except RunNotFound as error:
        say(err, "error:", "red", f" {error}")
        raise SystemExit(2) from None
    problems = [problem for member in loaded.members for problem in member.run.problems]
    for problem in problems[:1]:
        more = f" ({len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
        say(err, "warning:", "yellow", f" {problem}{more}; showing everything readable")
    return loaded


def num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def when(time_ns: int | None) -> str:
    if not time_ns:
        return "-"
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
