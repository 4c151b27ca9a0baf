"""``--json``: one JSON document on stdout for scripts, built from the same data as the table it replaces."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import orjson

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout instead of tables (NaN as null).")


def _default(value: Any) -> Any:
    if isinstance(value, (Path, set, frozenset, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def clean(value: Any) -> Any:
    """Non-finite numbers as null (as orjson writes them, said here so no option changes it) and every key as
    text (orjson refuses a key that is not, such as a step number)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def print_json(document: Any) -> None:
    """``document`` on stdout as indented JSON: numbers as numbers, NaN as null, paths as text."""
    click.echo(orjson.dumps(clean(document), default=_default, option=orjson.OPT_INDENT_2).decode())
