"""The alerting and recording rules of training health, made from code (``collector/rules/lezea.rules.yaml``).

Monitoring-mixin conventions: alerts are CamelCase with the ``Lezea`` prefix, carry a ``severity``
(critical, warning, info), and ``summary``/``description`` annotations naming the experiment and rank; each
has a runbook entry in README (``#alert-<name in lower case>``). Recording rules hold what several alerts
read (step rate, phase p95 and data-wait share per rank, over ``window``), named ``level:metric:operation``;
the dashboards compute the same over Grafana's rate interval.

Every threshold and duration is in :data:`THRESHOLDS`, with the reason for its value: a user changes them
in one place (``python scripts/rules.py --set stalled_after=30m``), and the tests make them short the
same way. Metric names and labels come from the names module through :func:`prometheus_name`, the
naming a run's /metrics and the Collector's path to Prometheus share (``mixin.promql``).

Why these expressions hold up on both metric paths: a scraped gauge gets a sample every scrape, a pushed
one only when its value changes (``exporter.metrics``), so a value that stays the same (a run's status,
its last step's time) is read with ``max_over_time``/``last_over_time`` over :data:`THRESHOLDS`'s
``lookback``, never as an instant sample that drops out after Prometheus's 5-minute lookback; the
heartbeat is sampled at every collection while the trainer lives, on both paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.mixin.promql import (
    BY_RANK,
    COLLECTOR_ENQUEUE_FAILED,
    COLLECTOR_QUEUE_CAPACITY,
    COLLECTOR_QUEUE_SIZE,
    COLLECTOR_REFUSED,
    COLLECTOR_SEND_FAILED,
    COLLECTOR_SIGNALS,
    COST,
    COST_KIND,
    COST_LIMIT,
    DESTINATION,
    ENDED,
    ERROR_TYPE,
    EXPERIMENT,
    EXPERIMENT_NAME,
    EXPORT_ITEMS,
    EXPORT_LAG_TIME,
    GPU_MEMORY_LIMIT,
    GPU_MEMORY_USAGE,
    GPU_UTILIZATION,
    HEARTBEAT,
    HW_ERRORS,
    HW_ID,
    LAST_STEP_TIME,
    LOSS,
    METRIC_KEY,
    NONFINITE,
    ON_RANK,
    OUTCOME,
    PHASE,
    PHASE_DURATION,
    PHASE_KIND,
    REFUSED_OUTCOMES,
    RUN_STATE,
    SCOPE,
    SIGNAL,
    SPLIT,
    STATUS,
    STEP,
)
from lezea_otel.model.recommendations import DATA_WAIT_SHARE


@dataclass(frozen=True)
class Threshold:
    value: str
    why: str


THRESHOLDS: dict[str, Threshold] = {
    "interval": Threshold("", "How often the rules are evaluated; empty: Prometheus's evaluation_interval "
                          "(15 s in collector/prometheus.yaml, the export interval)."),
    "window": Threshold("5m", "Window of step rates, phase p95 and the data-wait share: 20 exports at the "
                        "default 15 s, enough to smooth a loop that pauses for validation now and then."),
    "lookback": Threshold("1h", "How far back a run's last step, heartbeat and status are looked for: a "
                          "pushed value is sent again only when it changes, and alerts about a dead run "
                          "resolve after this long."),
    "stalled_after": Threshold("10m", "No training step for this long while the process lives: longer than "
                               "an evaluation pass or a checkpoint save usually takes. Raise it for loops "
                               "that validate longer; GPU utilisation is no sign of progress (a rank "
                               "deadlocked in NCCL shows 100%)."),
    "stalled_for": Threshold("2m", "The stall must last this much longer before the alert fires."),
    "dead_after": Threshold("2m", "A heartbeat older than this means the trainer is gone: 8 exports of the "
                            "default 15 s interval (a busy exporter may skip one or two)."),
    "died_for": Threshold("1m", "The heartbeat must stay gone this much longer (a restart in place "
                          "resumes it)."),
    "loss_keys": Threshold(".*loss.*", "The training keys (log_training_step) watched for non-finite "
                           "values."),
    "diverging_factor": Threshold("2", "Diverging: even the best loss of the last `diverging_recent` is this "
                                  "many times the best of the last `lookback` (a noisy loss keeps dipping "
                                  "to its best; a diverging one does not)."),
    "diverging_recent": Threshold("5m", "The recent stretch whose best loss is compared."),
    "diverging_for": Threshold("10m", "How long the loss must stay that far above its best."),
    "straggler_share": Threshold("0.2", "A rank whose step rate is this share below the median rank's "
                                 "(0.2: 20% slower); ranks that synchronise every step (DDP) step at one "
                                 "pace: LezeaSlowPhaseRank finds their straggler."),
    "straggler_for": Threshold("10m", "How long the rank must stay behind (a rank that checkpoints or "
                               "evaluates alone lags for a while)."),
    "slow_phase_factor": Threshold("1.5", "A rank whose phase p95 is this many times the median rank's "
                                   "p95 of that phase."),
    "slow_phase_for": Threshold("10m", "How long the phase must stay that slow on that rank."),
    "data_wait_share": Threshold(f"{DATA_WAIT_SHARE:g}", "Share of wall time a rank waits for its data "
                                 "(tracker.iterate) above which the input pipeline starves training; the "
                                 "data_wait recommendation's share (model/recommendations.py)."),
    "data_wait_for": Threshold("10m", "How long the loop must keep waiting that much."),
    "gpu_idle_below": Threshold("0.1", "GPU utilisation (busiest GPU of the rank) below which a GPU counts "
                                "as idle while steps go on: a CPU-bound loop or work left on the CPU."),
    "gpu_idle_for": Threshold("10m", "How long the GPUs must stay idle while the run steps."),
    "gpu_memory_share": Threshold("0.95", "GPU memory used over its limit above which the next larger "
                                  "batch or a fragmentation spike is an out-of-memory error."),
    "gpu_memory_for": Threshold("5m", "How long the memory must stay that full."),
    "behind_after": Threshold("2m", "A run's exporter this far behind its audit (the newest record taken "
                              "against the newest written, in the trainer's time): it delivers within a "
                              "second when all is well, and retries a collector that is down at most every "
                              "30 s; minutes behind is a collector down or refusing, or an exporter that "
                              "cannot keep up with the trainer."),
    "behind_for": Threshold("5m", "How long it must stay that far behind (a collector restart or a burst of "
                            "records catches up within a minute or two)."),
    "pipeline_window": Threshold("10m", "Window in which a refused, failed or dropped item of telemetry "
                                 "fires the pipeline alerts."),
    "queue_share": Threshold("0.8", "A collector exporter's queue this full is close to refusing new data."),
    "queue_for": Threshold("5m", "How long the queue must stay that full (a backend restart fills it "
                           "for a moment)."),
}

# Recording rules: the alerts read these (so can any query over the fixed ``window``).
STEP_RATE = f"lezea_rank:{STEP}:deriv"
PHASE_P95 = f"lezea_rank:{PHASE_DURATION}:p95"
DATA_WAIT = "lezea_rank:lezea_data_wait:share"


def seconds(duration: str) -> int:
    """A Prometheus duration (``90s``, ``10m``, ``1h30m``) in seconds, for arithmetic in PromQL."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return round(sum(int(n) * units[u] for n, u in parts))


def rules(overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The rule file (``groups``) with :data:`THRESHOLDS`, ``overrides`` replacing some of their values.

    Raises:
        ValueError: an override names no threshold, or a duration that is not one.
    """
    unknown = set(overrides or {}) - set(THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown thresholds {sorted(unknown)}; known: {sorted(THRESHOLDS)}")
    t = {key: threshold.value for key, threshold in THRESHOLDS.items()} | dict(overrides or {})
    for key, value in t.items():
        if key.endswith(("_after", "_for", "window", "lookback", "_recent")):
            seconds(value)
    groups: list[dict[str, Any]] = [
        {"name": "lezea.recording", "rules": _recording(t)},
        {"name": "lezea.training", "rules": _training(t)},
        {"name": "lezea.gpu", "rules": _gpu(t)},
        {"name": "lezea.pipeline", "rules": _pipeline(t)},
    ]
    if t["interval"]:
        for group in groups:
            group["interval"] = t["interval"]
    return {"groups": groups}


def _alert(name: str, expr: str, duration: str, severity: str, summary: str,
           description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description,
                            "runbook": f"README.md#alert-{name.lower()}"}}


_WHO = ("{{ $labels.lezea_experiment_name }} ({{ $labels.lezea_experiment_id }})"
        "{{ with $labels.dl_rank }}, rank {{ . }}{{ end }}")
"""The experiment and, for a rank of a distributed run, the rank: in every summary."""


def _counted(counter: str, window: str) -> str:
    """What ``counter`` counted in ``window``, its first count included: a counter made at its first event
    (the Collector's failure counters) appears already at N, where ``increase()`` sees nothing; a series
    absent ``window`` ago counts whole (the two parts are disjoint: ``or`` matches ignoring __name__)."""
    return (f"((increase({counter}[{window}]) and {counter} offset {window}) "
            f"or ({counter} unless {counter} offset {window}))")


def _alive(t: dict[str, str]) -> str:
    return (f"(time() - max by ({BY_RANK}) (max_over_time({HEARTBEAT}[{t['lookback']}])) "
            f"< {seconds(t['dead_after'])})")


def _ended(t: dict[str, str]) -> str:
    return f"max by ({BY_RANK}) (last_over_time({RUN_STATE}{{{STATUS}=~\"{ENDED}\"}}[{t['lookback']}])) == 1"


def _recording(t: dict[str, str]) -> list[dict[str, Any]]:
    window = t["window"]
    return [
        {"record": STEP_RATE, "expr": f"max by ({BY_RANK}) (deriv({STEP}[{window}]))"},
        {"record": PHASE_P95, "expr": f"histogram_quantile(0.95, sum by (le, {BY_RANK}, {PHASE}) "
                                      f"(rate({PHASE_DURATION}_bucket[{window}])))"},
        {"record": DATA_WAIT, "expr": f"sum by ({BY_RANK}) (rate({PHASE_DURATION}_sum"
                                      f"{{{PHASE_KIND}=\"{names.DATA_WAIT}\"}}[{window}]))"},
    ]


def _training(t: dict[str, str]) -> list[dict[str, Any]]:
    lookback = t["lookback"]

    def best(window: str) -> str:
        """Each loss series' lowest value in ``window`` (a scope and split of a rank is one series)."""
        return f"min by ({BY_RANK}, {SCOPE}, {SPLIT}) (min_over_time({LOSS}[{window}]))"

    return [
        _alert("LezeaRunStalled",
               f"(time() - max by ({BY_RANK}) (max_over_time({LAST_STEP_TIME}[{lookback}])) "
               f"> {seconds(t['stalled_after'])})\nand on ({ON_RANK}) {_alive(t)}\n"
               f"unless on ({ON_RANK}) {_ended(t)}",
               t["stalled_for"], "warning", f"No training step for {t['stalled_after']}: {_WHO}",
               "The process is alive (its heartbeat is fresh) but has logged no training step for "
               "{{ $value | humanizeDuration }}: a hang (a collective waiting for another rank, a stuck data "
               "loader, a deadlock) or a pause longer than expected."),
        _alert("LezeaRunDied",
               f"(time() - max by ({BY_RANK}) (max_over_time({HEARTBEAT}[{lookback}])) "
               f"> {seconds(t['dead_after'])})\nunless on ({ON_RANK}) {_ended(t)}",
               t["died_for"], "critical", f"Run ended without its end record: {_WHO}",
               "No heartbeat for {{ $value | humanizeDuration }} and no end status: the process was killed "
               "(SIGKILL, out of memory, a lost node) or its exporter died."),
        _alert("LezeaNonFiniteLoss",
               f"max by ({BY_RANK}, {METRIC_KEY}) "
               f"(max_over_time({NONFINITE}{{{METRIC_KEY}=~\"{t['loss_keys']}\"}}[{lookback}])) > 0\n"
               f"and on ({ON_RANK}) {_alive(t)}",
               "0m", "critical", f"Non-finite {{{{ $labels.lezea_metric_key }}}}: {_WHO}",
               "{{ $value }} NaN or infinite values of {{ $labels.lezea_metric_key }} so far: the run is "
               "training on garbage from here on."),
        _alert("LezeaLossDiverging",
               f"{best(t['diverging_recent'])}\n> {t['diverging_factor']} * {best(lookback)}\n"
               f"and {best(lookback)} > 0",
               t["diverging_for"], "warning", f"Loss diverging: {_WHO}",
               f"The best loss of the last {t['diverging_recent']} is {{{{ $value }}}}, over "
               f"{t['diverging_factor']} times the best of the last {lookback}."),
        _alert("LezeaStragglerRank",
               f"{STEP_RATE}\n< on ({EXPERIMENT}) group_left () (1 - {t['straggler_share']}) * "
               f"quantile by ({EXPERIMENT}) (0.5, {STEP_RATE})\n"
               f"and on ({EXPERIMENT}) count by ({EXPERIMENT}) ({STEP_RATE}) > 1",
               t["straggler_for"], "warning", f"Straggler: {_WHO}",
               "This rank steps at {{ $value | humanize }} steps/s, more than "
               f"{float(t['straggler_share']):.0%} below the median rank."),
        _alert("LezeaSlowPhaseRank",
               f"{PHASE_P95}\n> on ({EXPERIMENT}, {PHASE}) group_left () {t['slow_phase_factor']} * "
               f"quantile by ({EXPERIMENT}, {PHASE}) (0.5, {PHASE_P95})\n"
               f"and on ({EXPERIMENT}, {PHASE}) count by ({EXPERIMENT}, {PHASE}) ({PHASE_P95}) > 1",
               t["slow_phase_for"], "warning", f"Phase {{{{ $labels.lezea_phase_name }}}} slow: {_WHO}",
               "Its p95 is {{ $value | humanizeDuration }}, over "
               f"{t['slow_phase_factor']} times the median rank's for this phase."),
        _alert("LezeaDataLoaderStarved",
               f"{DATA_WAIT} > {t['data_wait_share']}",
               t["data_wait_for"], "warning", f"Waiting for data: {_WHO}",
               "The loop spends {{ $value | humanizePercentage }} of its time waiting for the next batch "
               "(tracker.iterate): the input pipeline starves training."),
        _alert("LezeaCostOverLimit",
               f"sum by ({EXPERIMENT}, {EXPERIMENT_NAME}) "
               f"(last_over_time({COST}{{{COST_KIND}=\"cost_eur\"}}[{lookback}]))\n"
               f"> on ({EXPERIMENT}) group_left () "
               f"max by ({EXPERIMENT}) (last_over_time({COST_LIMIT}[{lookback}]))",
               "0m", "warning", f"Cost over its limit: {_WHO}",
               "The run has cost {{ $value | humanize }} EUR (log_resource_cost), over its limit "
               "(LEZEA_COST_LIMIT_EUR)."),
    ]


def _gpu(t: dict[str, str]) -> list[dict[str, Any]]:
    return [
        _alert("LezeaGpuIdle",
               f"max by ({BY_RANK}) (max_over_time({GPU_UTILIZATION}[{t['window']}]))\n"
               f"< {t['gpu_idle_below']}\n"
               f"and on ({ON_RANK}) {STEP_RATE} > 0",
               t["gpu_idle_for"], "warning", f"GPUs idle while training: {_WHO}",
               "The busiest GPU of this rank is at {{ $value | humanizePercentage }} while steps go on."),
        _alert("LezeaGpuMemoryNearLimit",
               f"max by ({BY_RANK}, {HW_ID}) ({GPU_MEMORY_USAGE} / {GPU_MEMORY_LIMIT})\n"
               f"> {t['gpu_memory_share']}",
               t["gpu_memory_for"], "warning", f"GPU {{{{ $labels.hw_id }}}} memory almost full: {_WHO}",
               "{{ $value | humanizePercentage }} of its memory is in use."),
        _alert("LezeaGpuHardwareErrors",
               f"sum by ({BY_RANK}, {HW_ID}, {ERROR_TYPE}) "  # NVML's counts are there from the first
               f"(increase({HW_ERRORS}[{t['pipeline_window']}])) > 0",  # sample: only a rise is news
               "0m", "critical", f"GPU {{{{ $labels.hw_id }}}} reports {{{{ $labels.error_type }}}} "
               f"memory errors: {_WHO}",
               "{{ $value }} new ECC errors: an uncorrected one corrupts results and usually ends in an "
               "XID."),
    ]


def _pipeline(t: dict[str, str]) -> list[dict[str, Any]]:
    window = t["pipeline_window"]

    def increase(counter: str) -> str:
        """The increase of the Collector's counter ``counter`` of every signal, each series labelled with
        its signal (``or`` keeps one of two series with the same labels)."""
        return " or ".join(f'label_replace({_counted(counter.format(signal), window)}, "signal", '
                           f'"{signal}", "", "")' for signal in COLLECTOR_SIGNALS)

    refused_items = _counted(f'{EXPORT_ITEMS}{{{OUTCOME}=~"{REFUSED_OUTCOMES}"}}', window)
    failed = increase(COLLECTOR_SEND_FAILED)
    enqueue = increase(COLLECTOR_ENQUEUE_FAILED)
    refused = increase(COLLECTOR_REFUSED)
    where = "collector {{ $labels.instance }}, exporter {{ $labels.exporter }}"
    return [
        _alert("LezeaExporterBehind",
               f"max by ({BY_RANK}, {DESTINATION}) ({EXPORT_LAG_TIME}) > {seconds(t['behind_after'])}",
               t["behind_for"], "warning",
               f"Telemetry behind the run ({{{{ $labels.{DESTINATION} }}}}): {_WHO}",
               "The newest data this destination took is {{ $value | humanizeDuration }} older than the "
               "newest record the trainer wrote: the collector is down or refusing, or the exporter cannot "
               "keep up. Nothing is lost (the audit holds it); the dashboards lag meanwhile."),
        _alert("LezeaTelemetryRefused",
               f"sum by ({BY_RANK}, {DESTINATION}, {SIGNAL}) ({refused_items}) > 0",
               "0m", "warning",
               f"{{{{ $labels.{SIGNAL} }}}} refused ({{{{ $labels.{DESTINATION} }}}}): {_WHO}",
               "{{ $value }} items refused for good: a run file that could not be written (local), or "
               "items the collector rejected while taking the rest (otlp). The audit keeps them: "
               "`lezea-otel export --all` sends the run again."),
        _alert("LezeaCollectorDroppingData", f"sum by (job, instance, exporter, signal) ({failed}) > 0",
               "0m", "critical", f"Telemetry dropped after the collector took it: {where}",
               "{{ $value }} spans, points or log records refused for good by the backend (Prometheus: "
               "too old, or a second value in one millisecond; Loki: too old) or failed after every retry."),
        _alert("LezeaCollectorQueueFull", f"sum by (job, instance, exporter, signal) ({enqueue}) > 0",
               "0m", "critical", f"Collector queue full, data refused: {where}",
               "{{ $value }} items found the sending queue full; the senders retry, but a backend is "
               "down or too slow."),
        _alert("LezeaCollectorQueueNearCapacity",
               f"max by (job, instance, exporter, data_type) "
               f"({COLLECTOR_QUEUE_SIZE} / {COLLECTOR_QUEUE_CAPACITY}) > {t['queue_share']}",
               t["queue_for"], "warning", f"Collector queue filling up: {where}",
               "The queue is {{ $value | humanizePercentage }} full: its backend is down or slower than "
               "the data coming in."),
        _alert("LezeaCollectorRefusing", f"sum by (job, instance, receiver, signal) ({refused}) > 0",
               "0m", "warning", "The collector refuses data: {{ $labels.instance }}",
               "{{ $value }} items refused by its receiver (memory_limiter): the senders retry; the run's "
               "exporter keeps the rest in its audit."),
    ]
