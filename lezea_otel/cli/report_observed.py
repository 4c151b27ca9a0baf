"""What the exporter's observers sampled over the run, read back for the report: process-tree CPU and
RSS, the host's CPU and memory, each GPU's utilisation and memory.

The observers (``exporter/observers.py``) sample every ``LEZEA_OBSERVE_INTERVAL`` (10 s) and feed
observable gauges; nothing else keeps their samples. Those gauges are exported with the run's other
metrics, locally to ``otlp/metrics.jsonl`` (the official OTLP-JSON file exporter: a line per export, every
``LEZEA_METRIC_EXPORT_INTERVAL_MS``, 15 s by default, each holding each gauge's latest sample). So the
series here is one point per export, stamped with its collection time: as fine as the coarser of the two
intervals. A run with ``LEZEA_EXPORTER=none``, ``OTEL_SDK_DISABLED`` or ``LEZEA_OBSERVERS=false`` was never
sampled; one that ended before the first export has the final export's point alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lezea_otel import semconv as names

MIB = 1 / 2**20
GAUGES: dict[str, tuple[str, str, float]] = {
    names.PROCESS_CPU_UTILIZATION: ("process tree CPU %", "percent", 100.0),
    names.PROCESS_MEMORY_USAGE: ("process tree RSS MiB", "MiB", MIB),
    names.SYSTEM_CPU_UTILIZATION: ("host CPU %", "percent", 100.0),
    names.SYSTEM_MEMORY_UTILIZATION: ("host memory %", "percent", 100.0),
    names.GPU_UTILIZATION: ("GPU {gpu} utilisation %", "percent", 100.0),
    names.GPU_MEMORY_USAGE: ("GPU {gpu} memory MiB", "MiB", MIB),
}
"""Observer gauge -> (series name, axis, factor to its unit)."""


@dataclass
class Observed:
    """Series name -> (axis: ``percent`` or ``MiB``, (seconds since the origin, value) points)."""

    series: dict[str, tuple[str, list[tuple[float, float]]]] = field(default_factory=dict)
    why_none: str = ""
    """When there are no series: why, in one sentence."""


def _attributes(point: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for item in point.get("attributes") or []:
        value = item.get("value") or {}
        out[item.get("key")] = next(iter(value.values()), None) if isinstance(value, dict) else None
    return out


def _value(point: dict[str, Any]) -> float | None:
    raw = point.get("asDouble", point.get("asInt"))
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def observed_series(run_dir: Path, origin_ns: int) -> Observed:
    """The observers' samples of the run in ``run_dir``, in seconds since ``origin_ns``; a line that does
    not parse (the last one of a run killed mid-write) is skipped."""
    path = run_dir / names.OTLP_DIR / "metrics.jsonl"
    found = Observed()
    try:
        handle = path.open("rb")
    except OSError:
        found.why_none = (f"No observer samples: the run has no {names.OTLP_DIR}/metrics.jsonl (it ran with "
                          "LEZEA_EXPORTER=none or OTEL_SDK_DISABLED=true, so nothing sampled it).")
        return found
    with handle:
        for line in handle:
            if not any(name.encode() in line for name in GAUGES):
                continue
            try:
                export = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            _read_export(export, origin_ns, found)
    for _, points in found.series.values():
        points.sort()
    if not found.series:
        found.why_none = (f"No observer samples in {names.OTLP_DIR}/metrics.jsonl: the observers were off "
                          "(LEZEA_OBSERVERS=false) or the run ended before their first sample was exported.")
    return found


def _read_export(export: Any, origin_ns: int, found: Observed) -> None:
    for resource in export.get("resourceMetrics") or [] if isinstance(export, dict) else []:
        for scope in resource.get("scopeMetrics") or []:
            for metric in scope.get("metrics") or []:
                spec = GAUGES.get(metric.get("name"))
                if spec is None:
                    continue
                title, axis, factor = spec
                data = metric.get("gauge") or metric.get("sum") or {}
                for point in data.get("dataPoints") or []:
                    value = _value(point)
                    if value is None:
                        continue
                    gpu = _attributes(point).get(names.GPU_INDEX, "?") if "{gpu}" in title else ""
                    seconds = (int(point.get("timeUnixNano") or 0) - origin_ns) / 1e9
                    series = found.series.setdefault(title.format(gpu=gpu), (axis, []))[1]
                    series.append((seconds, value * factor))


def observed_layout(figure: Any, title: str) -> Any:
    """Percentages on the left axis, MiB on the right."""
    return figure.update_layout(title=title, xaxis_title="seconds since the start", height=420,
                                yaxis={"title": "percent", "rangemode": "tozero"},
                                yaxis2={"title": "MiB", "overlaying": "y", "side": "right",
                                        "rangemode": "tozero"},
                                legend={"x": 1.08})


def add_observed(go: Any, figure: Any, observed: Observed, prefix: str = "", colour: str | None = None,
                 group: str | None = None) -> None:
    """The observed series as lines of ``figure`` (markers too: an export every 15 s is few points)."""
    for index, (name, (axis, points)) in enumerate(observed.series.items()):
        style = {"dash": ("solid", "dot", "dash", "dashdot")[index % 4]} if colour else {}
        figure.add_trace(go.Scatter(
            x=[t for t, _ in points], y=[v for _, v in points], mode="lines+markers",
            name=f"{prefix} {name}".strip(), yaxis="y2" if axis == "MiB" else "y", legendgroup=group,
            line={**style, **({"color": colour} if colour else {})}))
