"""The Grafana dashboards, made from code with ``grafana-foundation-sdk``: one module per dashboard, each with
``build() -> dict`` (the JSON object Grafana provisions). ``python scripts/dashboards.py`` writes them to
``grafana/dashboards/``; a test fails when a committed file differs from what its code makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lezea_otel.mixin.dashboards import cost, logs, pipeline, resources, slow_phases, training

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "training.json": training.build,
    "resources.json": resources.build,
    "slow-phases.json": slow_phases.build,
    "cost.json": cost.build,
    "logs.json": logs.build,
    "pipeline.json": pipeline.build,
}
"""File name in grafana/dashboards/ -> the function that makes it."""
