"""The metrics the exporter builds from records, declared once: their units, descriptions and buckets
(``metrics.MetricsBuilder`` looks each name up here when it first makes the instrument)."""

from __future__ import annotations

import re

from lezea_otel import semconv as names

MAX_SERIES_PER_NAME = 1000
"""Attribute sets (scope, split, ...) per instrument; past it values go to an overflow series."""

# The SDK's default buckets (0, 5, 10, ... 10000) are for milliseconds; phases are seconds, from a
# millisecond forward pass to an hour-long evaluation. Score buckets straddle zero: losses can rise.
PHASE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0, 1800.0, 3600.0)
DATA_SCORE_BUCKETS = (-1.0, -0.1, -0.01, -0.001, 0.0, 0.001, 0.01, 0.1, 1.0)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def metric_name(key: str) -> str:
    """``lezea.training.<key>``: OTel-legal, at most 255 characters, stable for one key."""
    return (names.TRAINING_PREFIX + _UNSAFE.sub("_", key))[:255]


COUNTERS = {
    names.CHECKPOINTS: ("{checkpoint}", "Checkpoints logged"),
    names.CHECKPOINT_SIZE: (names.UNIT_BYTES, "Bytes of checkpoints logged"),
    names.COMMENTS: ("{comment}", "Comments and conclusions logged"),
    names.DATA_SAMPLES_USED: ("{sample}", "Samples reported by log_data_usage"),
    names.MODIFICATION_COUNT: ("{modification}", "Modifications in logged trees"),
    names.TRAINING_NONFINITE: ("{value}", "NaN or infinite training values (kept in the audit)"),
}
HISTOGRAMS = {
    names.PHASE_DURATION: (names.UNIT_SECONDS, "Duration of user phases (tracker.span)", PHASE_BUCKETS_S),
    names.PHASE_GPU_DURATION: (names.UNIT_SECONDS, "GPU time of user phases (CUDA events on their stream)",
                               PHASE_BUCKETS_S),
    names.DATA_SCORE: ("", "Loss improvement per scored sample (before - after)", DATA_SCORE_BUCKETS),
}
GAUGES = {
    names.TRAINING_STEP: ("", "Last step passed to log_training_step"),
    names.TRAINING_LAST_STEP_TIME: (names.UNIT_SECONDS, ("Unix time of the last training step: time() minus "
                                                         "this is 'time since last step'")),
    names.RUN_START_TIME: (
        names.UNIT_SECONDS, "Unix time the run started: 'started at' and run duration on dashboards"),
    names.COST_LIMIT: ("", "The run's cost limit in EUR (LEZEA_COST_LIMIT_EUR), when one is set"),
}
