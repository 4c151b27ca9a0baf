"""lezea / Training: is each chosen run alive and getting anywhere? Its current step, last loss and status
(running, finished, failed, terminated, or stopped: still 'running' but without heartbeat for longer than
``$stale_after`` seconds, a killed run), the time since its last step and heartbeat, its training values over
time (loss, delta loss, steps per second, NaN/inf counts, one panel per logged value), how long its
``tracker.span()`` phases take, and, for a distributed run, each rank's status and which rank lags behind.
The Now, Runs and Ranks queries read the last values over the whole time range (``[$__range]``), so a run
whose series stopped arriving still shows its last step and status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model

from lezea_otel import semconv as names
from lezea_otel.mixin.dashboards.common import (
    PROMETHEUS,
    RUNS,
    RUNS_AND_RANKS,
    Table,
    board,
    graph,
    legend,
    promql,
    query_variable,
    run_variables,
    single,
)
from lezea_otel.mixin.promql import (
    DELTA_LOSS,
    ENDED,
    EXPERIMENT,
    EXPERIMENT_NAME,
    HEARTBEAT,
    LAST_STEP_TIME,
    LOSS,
    METRIC_KEY,
    NONFINITE,
    ON_RANK,
    PHASE,
    PHASE_DURATION,
    RANK,
    RUN_START_TIME,
    RUN_STATE,
    SCOPE,
    SPLIT,
    STATUS,
    STEP,
    TRAINING_PREFIX,
)
from lezea_otel.mixin.rules import STEP_RATE, THRESHOLDS

BY_RUN = f"{EXPERIMENT_NAME}, {EXPERIMENT}"
BY_RUN_RANK = f"{BY_RUN}, {RANK}"
STATUSES = (("running", "green"), ("finished", "blue"), ("failed", "red"), ("terminated", "orange"),
            ("stopped", "red"), (names.STATUS_ABANDONED, "purple"))
"""The codes the status queries answer (1 to 5, in this order) and their colours. 'stopped' is no status a
run reports: it is a run (or rank) still 'running' whose heartbeat is older than ``$stale_after``."""
CODE = {status: code for code, (status, _) in enumerate(STATUSES, start=1)}
STALE_AFTER_S = ("30", "45", "60", "120", "300", "900")
STALE_AFTER_DEFAULT = "45"
HEARTBEAT_LATE = ((None, "green"), (int(STALE_AFTER_DEFAULT), "red"))
"""A heartbeat older than the default ``stale_after`` is red."""
LOGS_OF_RUN = "/d/lezea-logs/lezea-logs?var-experiment=${__value.raw}&${__url_time_range}"
"""The Logs dashboard, for the experiment id of the cell clicked, over the same time range."""

RUN_LEGEND = legend(EXPERIMENT_NAME)
RANK_LEGEND = f"{RUN_LEGEND} rank {legend(RANK)}"
VALUE_LEGEND = f"{legend(EXPERIMENT_NAME, SCOPE, SPLIT)} rank {legend(RANK)}"
PHASE_LEGEND = legend(EXPERIMENT_NAME, PHASE)


# --- queries ----------------------------------------------------------------------------------------
def _chosen(metric: str, matchers: str = "") -> str:
    """``metric``'s series of the chosen runs and ranks (``matchers``: more of them, after a comma)."""
    return f"{metric}{{{RUNS_AND_RANKS}{matchers}}}"


def _last(metric: str, by: str) -> str:
    """The last value of the time range, the highest of each ``by`` group's series."""
    return f"max by ({by}) (last_over_time({_chosen(metric)}[$__range]))"


def _since(metric: str, by: str) -> str:
    """Seconds since the time that ``metric`` (a Unix time gauge) last reported in the range."""
    return f"time() - {_last(metric, by)}"


def _steps_per_second(by: str, window: str) -> str:
    """The step's slope over ``window``, the fastest series of each ``by`` group."""
    return f"max by ({by}) (deriv({_chosen(STEP)}[{window}]))"


def _status(by: str, on: str) -> str:
    """The status code (``STATUSES``) of each ``by`` group: its last reported status, or stopped when that is
    running but the heartbeat (of the same ``on`` labels: run, or run and rank) is older than $stale_after."""
    def reported(status: str, code: int) -> str:
        state = _chosen(RUN_STATE, f', {STATUS}="{status}"')
        return f"(max by ({by}) (last_over_time({state}[$__range]) == 1) * 0 + {code})"

    stopped = (f"({reported('running', CODE['stopped'])}\n    and on ({on})\n"
               f"    ({_since(HEARTBEAT, on)} > $stale_after))")
    return "\nor ".join([*(reported(status, CODE[status]) for status in ENDED.split("|")),
                         stopped, reported("running", CODE["running"])])


# --- panels -----------------------------------------------------------------------------------------
def _graph(title: str, description: str, expr: str, legend_format: str, unit: str = "none",
           width: int = 12, height: int = 8, exemplar: bool = False) -> timeseries.Panel:
    """A time series panel of one range query."""
    return graph(title, description, [promql(expr, legend_format, exemplar=exemplar)], unit, width, height)


def _now(title: str, description: str, expr: str, legend_format: str = RUN_LEGEND, unit: str = "none",
         width: int = 5, height: int = 4,
         steps: Sequence[tuple[float | None, str]] = ((None, "green"),)) -> stat.Panel:
    """A stat panel of one instant query: its value now."""
    return single(title, description, promql(expr, legend_format, instant=True), unit, width, height,
                  steps=steps)


def _by_thresholds(panel: stat.Panel) -> stat.Panel:
    return panel.color_scheme(dashboard.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))


def _status_mappings() -> list[model.ValueMapping]:
    return [model.ValueMap(options={
        str(code): model.ValueMappingResult(text=status, color=color, index=code - 1)
        for code, (status, color) in enumerate(STATUSES, start=1)})]


def _set(field: str, value: object) -> model.DynamicConfigValue:
    """A field override's property (``unit``, ``custom.width``, ...)."""
    return model.DynamicConfigValue(id_val=field, value=value)


def _transformation(kind: str, options: object) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val=kind, options=options)


def _table(title: str, description: str, labels: Sequence[tuple[str, str]],
           columns: Sequence[tuple[str, str, str]], sort_by: str, height: int,
           numeric: Sequence[str] = ()) -> Table:
    """One row per label set, merged from instant queries: the ``labels`` ((label, header)), then the
    ``columns`` ((refId, header, query)) in this order; sorted by column ``sort_by``; the ``numeric`` columns
    converted to numbers (to sort them so). A Status column shows the status names, coloured; a Since
    heartbeat column turns red when the heartbeat is late."""
    panel = (Table().title(title).description(description).datasource(PROMETHEUS).span(24).height(height)
             .field_options(common_builders.TableFieldOptions().align(common_model.FieldTextAlignment.AUTO)
                     .cell_options(common_model.TableAutoCellOptions()).filterable(True))
             .show_header(True).cell_height(common_model.TableCellHeight.SM)
             .footer(common_builders.TableFooterOptions().show(False).reducer(["sum"]))
             .sort_by([common_builders.TableSortByFieldState().display_name(sort_by).desc(False)]))
    for ref, _, expr in sorted(columns):
        panel = panel.with_target(promql(expr, "__auto", ref, instant=True, table=True))

    fields = [*labels, *((f"Value #{ref}", header) for ref, header, _ in columns)]
    panel = (panel.with_transformation(_transformation("merge", {}))
             .with_transformation(_transformation("organize", {
                 "excludeByName": {"Time": True},
                 "indexByName": {field: index for index, (field, _) in enumerate(fields)},
                 "renameByName": dict(fields)})))
    if numeric:
        panel = panel.with_transformation(_transformation("convertFieldType", {
            "conversions": [{"targetField": name, "destinationType": "number"} for name in numeric],
            "fields": {}}))
    panel = panel.with_transformation(_transformation("sortBy",
                                                      {"sort": [{"field": sort_by, "desc": False}]}))

    late = dashboard.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(
        [model.Threshold(value=value, color=color) for value, color in HEARTBEAT_LATE]).build()
    background = common_model.TableColoredBackgroundCellOptions(
        mode=common_model.TableCellBackgroundDisplayMode.BASIC)
    return (panel
            .override_by_name("Status", [_set("mappings", _status_mappings()),
                                         _set("custom.cellOptions", background), _set("custom.width", 120)])
            .override_by_name("Since last step", [_set("unit", "s")])
            .override_by_name("Since heartbeat", [_set("unit", "s"), _set("thresholds", late),
                                                  _set("custom.cellOptions",
                                                       common_model.TableColorTextCellOptions())]))


def _now_row() -> list[Builder[Any]]:
    return [
        dashboard.Row("Now"),
        _now("Current step", "Last step passed to log_training_step.", _last(STEP, BY_RUN), width=4),
        _now("Last loss", "The last loss each run logged in the time range, per scope, data split and rank.",
             f"last_over_time({_chosen(LOSS)}[$__range])", VALUE_LEGEND),
        _by_thresholds(_now(
            "Run status", "running / finished / failed / terminated, or stopped when the last status is "
            "still running but no heartbeat arrived for $stale_after s (killed run).",
            _status(BY_RUN, EXPERIMENT), steps=((None, "text"),)))
        .mappings(_status_mappings()).color_mode(common_model.BigValueColorMode.BACKGROUND),
        _now("Time since last step", f"time() - {LAST_STEP_TIME}", _since(LAST_STEP_TIME, BY_RUN), unit="s",
             steps=((None, "green"), (120, "orange"), (600, "red"))),
        _now("Time since heartbeat", f"time() - {HEARTBEAT}; the heartbeat is exported with every metric "
             "export while the process lives.", _since(HEARTBEAT, BY_RUN), unit="s", steps=HEARTBEAT_LATE),
    ]


def _runs_row() -> list[Builder[Any]]:
    runs = _table(
        "Runs", "Every run seen in the time range. A run whose last status is still 'running' but whose "
        "heartbeat is older than $stale_after s is shown as 'stopped' (killed, OOM, lost node): its series "
        "stop arriving, so the table reads the last values over the whole range. Ranks: how many ranks of "
        "the run reported in the range (1 for a single process); see the Ranks row for each rank's status.",
        [(EXPERIMENT_NAME, "Experiment"), (EXPERIMENT, "Experiment id")],
        [("E", "Started", f"1000 * {_last(RUN_START_TIME, BY_RUN)}"),
         ("A", "Status", _status(BY_RUN, EXPERIMENT)),
         ("F", "Ranks", f"count by ({BY_RUN}) ({_last(HEARTBEAT, BY_RUN_RANK)})"),
         ("B", "Step", _last(STEP, BY_RUN)),
         ("C", "Since last step", _since(LAST_STEP_TIME, BY_RUN)),
         ("D", "Since heartbeat", _since(HEARTBEAT, BY_RUN))],
        sort_by="Since heartbeat", height=8)
    runs = (runs.override_by_name("Experiment id", [_set("links", [{"title": "Logs of this run",
                                                                    "url": LOGS_OF_RUN}])])
            .override_by_name("Started", [_set("unit", "dateTimeAsIso")]))
    return [dashboard.Row("Runs"), runs]


def _training_values_row() -> list[Builder[Any]]:
    return [
        dashboard.Row("Training values"),
        _graph("Loss", "The loss of each run, scope, data split and rank, as logged by log_training_step.",
               _chosen(LOSS), VALUE_LEGEND),
        _graph("Delta loss", "Loss minus the previous step's loss, per run, scope, data split and rank.",
               _chosen(DELTA_LOSS), VALUE_LEGEND),
        _graph("Step by rank", "The last logged step of each rank over time.",
               f"max by ({BY_RUN_RANK}) ({_chosen(STEP)})", RANK_LEGEND, width=8, height=7),
        _graph("Steps per second", "Steps per second of each run (its fastest rank), from the step's slope.",
               _steps_per_second(BY_RUN, "$__rate_interval"), RUN_LEGEND, width=8, height=7),
        _graph("Non-finite values (NaN/inf)", "NaN or infinite training values per interval, by run, rank "
               "and key: they are counted, not exported as values.",
               f"sum by ({BY_RUN_RANK}, {METRIC_KEY}) (increase({_chosen(NONFINITE)}[$__rate_interval]))",
               f"{RANK_LEGEND} {legend(METRIC_KEY)}", width=8, height=7),
        _graph("$value", "One panel per training value (log_training_step keys).",
               f'{{__name__=~"$value", {RUNS_AND_RANKS}}}', VALUE_LEGEND, width=8, height=7)
        .repeat("value").repeat_direction("h"),
    ]


def _phases_row() -> list[Builder[Any]]:
    by_phase = f"{EXPERIMENT_NAME}, {PHASE}"

    def rate(series: str, by: str = by_phase) -> str:
        return f"sum by ({by}) (rate({_chosen(f'{PHASE_DURATION}_{series}')}[$__rate_interval]))"

    return [
        dashboard.Row("Phases"),
        _graph("Phase duration p95", "tracker.span() phases. p95 interpolates inside histogram buckets; the "
               "mean panel is exact.", f"histogram_quantile(0.95, {rate('bucket', f'le, {by_phase}')})",
               PHASE_LEGEND, unit="s", exemplar=True),
        _graph("Phase duration mean", "Mean duration of each tracker.span() phase: the rate of its total "
               "time over the rate of its count.", f"{rate('sum')} / {rate('count')}", PHASE_LEGEND,
               unit="s"),
    ]


def _ranks_row() -> list[Builder[Any]]:
    step = _last(STEP, BY_RUN_RANK)
    per_rank = _steps_per_second(BY_RUN_RANK, "$__range")
    behind = f"max by ({EXPERIMENT}) ({step})\n- on ({EXPERIMENT}) group_right ()\n{step}"
    slowest = (f"1 - (bottomk by ({EXPERIMENT}) (1, {per_rank})\n  / on ({EXPERIMENT}) group_left ()\n"
               f"  quantile by ({EXPERIMENT}) (0.5, {per_rank}))")
    ranks = _table(
        "Ranks", "One row per rank of each run: its own status (a rank whose heartbeat is older than "
        "$stale_after s while it last said 'running' is 'stopped', even while the other ranks go on), last "
        "step, steps behind the leading rank, steps per second over the range, and time since its last step "
        "and heartbeat.",
        [(EXPERIMENT_NAME, "Experiment"), (EXPERIMENT, "Experiment id"), (RANK, "Rank")],
        [("A", "Status", _status(BY_RUN_RANK, ON_RANK)),
         ("B", "Step", step),
         ("C", "Behind leader", behind),
         ("D", "Steps/s", per_rank),
         ("E", "Since last step", _since(LAST_STEP_TIME, BY_RUN_RANK)),
         ("F", "Since heartbeat", _since(HEARTBEAT, BY_RUN_RANK))],
        sort_by="Rank", height=9, numeric=["Rank"])
    return [
        dashboard.Row("Ranks (distributed runs)"),
        _graph("Steps per second by rank", f"One line per rank ({RANK}), over {THRESHOLDS['window'].value}: "
               f"the recording rule {STEP_RATE} that LezeaStragglerRank reads. A rank below the others is a "
               "straggler, unless the ranks synchronise every step (all_reduce): then all step at the "
               "slowest one's pace; compare phase durations per rank (Slow phases, Ranks row) instead.",
               _chosen(STEP_RATE), RANK_LEGEND),
        _by_thresholds(_now(
            "Slowest rank (steps per second below the median)", "Per run: the rank stepping slowest over "
            "the time range (its name) and how far below the median rank's steps per second it is (0% = "
            "balanced, 100% = stalled). A single-process run shows 0% without a rank.",
            slowest, RANK_LEGEND, unit="percentunit", width=12, height=8,
            steps=((None, "green"), (0.1, "orange"), (0.3, "red"))))
        .decimals(0).min(0).max(1).text_mode(common_model.BigValueTextMode.VALUE_AND_NAME),
        ranks.override_by_name("Steps/s", [_set("decimals", 2)]),
    ]


# --- variables --------------------------------------------------------------------------------------
def _variables() -> list[Builder[Any]]:
    experiment_name, experiment, rank = run_variables(ranks=True)
    rank = rank.sort(model.VariableSort.NUMERICAL_ASC).description(
        f"{RANK} of a distributed run's ranks (torchrun, SLURM, MPI). All also matches a single-process "
        f"run, whose series have no {RANK}.")
    not_values = "|".join(name.removeprefix(f"{TRAINING_PREFIX}_")
                          for name in (STEP, LAST_STEP_TIME, NONFINITE))
    value = query_variable("value", "Training value",
                           f'label_values({{__name__=~"{TRAINING_PREFIX}_.+", {RUNS}}}, __name__)').regex(
        f"/^(?!{TRAINING_PREFIX}_({not_values})$).+/")  # the step, its time and the NaN count: no values
    stale_after = (
        dashboard.CustomVariable("stale_after").label("Stale after (s)").values(",".join(STALE_AFTER_S))
        .multi(False).include_all(False)
        .description("A running run without heartbeat for this many seconds is shown as stopped. Use about "
                     "3x the metric export interval (default 15 s).")
        .current(model.VariableOption(selected=True, text=STALE_AFTER_DEFAULT, value=STALE_AFTER_DEFAULT))
        .options([model.VariableOption(selected=seconds == STALE_AFTER_DEFAULT, text=seconds, value=seconds)
                  for seconds in STALE_AFTER_S]))
    return [experiment_name, experiment, rank, value, stale_after]


def build() -> dict[str, Any]:
    built = board("lezea-training", "lezea / Training",
                  "Training progress and run liveness per experiment (lezea_otel).", _variables(),
                  [*_now_row(), *_runs_row(), *_training_values_row(), *_phases_row(), *_ranks_row()],
                  since="now-6h")  # the Runs table lists the runs seen in the range
    for panel in built["panels"]:
        if panel.get("repeat"):
            panel["maxPerRow"] = 3  # the SDK's panel model (Grafana 10.1) has no maxPerRow
    return built
