"""lezea / Slow phases: which ``tracker.span()`` phases are slow, and on which rank. Tempo's span metrics
give each phase's p95, calls and errors per second, and a TraceQL table lists the phase spans slower than a
chosen duration with their traces; the ``lezea_phase_duration_seconds`` histogram (every run, replayed ones
too) gives the p95, the distribution and each phase's share of wall time; per rank, the p95 of each phase,
the straggler of each phase (the rank with the highest p95 against the median rank's) and the data-wait
share. The per-rank graphs read the recording rules the alerts read (``mixin.rules``): what a panel shows is
what an alert fires on.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, heatmap, table
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import prometheus as prometheus_model
from grafana_foundation_sdk.models import tempo as tempo_model

from lezea_otel import semconv as names
from lezea_otel.mixin.dashboards.common import (
    PROMETHEUS,
    RUNS,
    RUNS_AND_RANKS,
    TEMPO,
    Table,
    board,
    graph,
    legend,
    promql,
    query_variable,
    run_variables,
)
from lezea_otel.mixin.promql import EXPERIMENT, EXPERIMENT_NAME, PHASE, PHASE_DURATION, RANK
from lezea_otel.mixin.rules import DATA_WAIT, PHASE_P95, THRESHOLDS

# Tempo's metrics-generator names these (span metrics, ``collector/tempo.yaml``), not lezea_otel.
SPAN_LATENCY = "traces_spanmetrics_latency"
SPAN_CALLS = "traces_spanmetrics_calls_total"
SPAN_NAME = "span_name"
STATUS_CODE = "status_code"

PHASES = f'{PHASE}=~"$phase"'
"""The phases chosen in the Phase variable."""
CHOSEN = f"{RUNS_AND_RANKS}, {PHASES}"
"""The chosen runs, ranks and phases."""
PER_PHASE = f"{EXPERIMENT}, {PHASE}"
"""A run's phase, across its ranks."""
NO_SPAN_METRICS = ("Tempo makes them only of spans reaching it within 30 s of their end: a replayed run "
                   "(lezea-otel export) or a backlog after an outage has none")


def _span_latency(window: str) -> str:
    """The chosen phase spans' latency buckets per span name, per second over ``window``."""
    return f"sum by (le, {SPAN_NAME}) (rate({SPAN_LATENCY}_bucket{{{CHOSEN}}}[{window}]))"


def _p95_by_rank(window: str) -> str:
    """p95 of each phase on each rank over ``window`` (the rank filter last, as these panels had it)."""
    selector = f'{RUNS}, {PHASES}, {RANK}=~"$rank"'
    return (f"histogram_quantile(0.95, sum by (le, {EXPERIMENT_NAME}, {EXPERIMENT}, {PHASE}, {RANK}) "
            f"(rate({PHASE_DURATION}_bucket{{{selector}}}[{window}])))")


def _straggler_queries() -> dict[str, str]:
    """Per run and phase, one row each: A the slowest rank's p95 (its labels name it), B the median rank's, C
    the fastest rank's, D slowest / median. B and C carry A's labels (``0 * A + on (...) group_left``) so that
    Grafana's merge joins the four into one row; ``>= 0`` drops the NaN of a phase without samples."""
    ranked = f"({_p95_by_rank('$__range')} >= 0)"
    slowest = f"topk by ({PER_PHASE}) (1, {ranked})"
    median = f"quantile by ({PER_PHASE}) (0.5, {ranked})"
    fastest = f"min by ({PER_PHASE}) ({ranked})"
    join = f"on ({PER_PHASE}) group_left ()"
    return {"A": slowest,
            "B": f"0 * {slowest}\n+ {join}\n{median}",
            "C": f"0 * {slowest}\n+ {join}\n{fastest}",
            "D": f"{slowest}\n/ {join}\n{median}"}


class _TraceqlSpans(tempo_model.TempoQuery):
    """A TraceQL query listed span by span (``tableType``), ``spss`` spans per span set: two fields of
    Grafana's Tempo query that the SDK's model lacks."""

    def __init__(self, query: str, limit: int, spans_per_set: int) -> None:
        super().__init__(ref_id="A", query_type=tempo_model.TempoQueryType.TRACEQL, query=query, limit=limit,
                         datasource=TEMPO)
        self.spss = spans_per_set

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "spss": self.spss, "tableType": "spans"}


class _Spans(Builder[cogvariants.Dataquery]):
    def __init__(self, query: str, limit: int, spans_per_set: int) -> None:
        self._query = _TraceqlSpans(query, limit, spans_per_set)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def _variables() -> list[Builder[Any]]:
    experiment_name, experiment, rank = run_variables(ranks=True)
    rank.sort(model.VariableSort.NUMERICAL_ASC).description(
        f"{RANK} of a distributed run's ranks. All also matches a single-process run (no {RANK}). The Tempo "
        f"span-metrics panels split by rank only where Tempo's metrics-generator has the {names.DL_RANK} "
        "dimension.")
    phase = query_variable("phase", "Phase", f"label_values({PHASE_DURATION}_count{{{RUNS}}}, {PHASE})")
    durations = ["100ms", "1s", "5s", "30s", "1m", "5m"]
    min_duration = (dashboard.CustomVariable("min_duration").label("Slower than").values(",".join(durations))
                    .description("The TraceQL table's lower bound on a phase span's duration.")
                    .multi(False).include_all(False)
                    .current(model.VariableOption(selected=True, text="1s", value="1s"))
                    .options([model.VariableOption(selected=value == "1s", text=value, value=value)
                              for value in durations]))
    return [experiment_name, experiment, rank, phase, min_duration]


def _from_traces() -> list[Builder[Any]]:
    slowest = f"topk(10, histogram_quantile(0.95, {_span_latency('$__range')}))"
    spans = (f'{{ resource.{names.EXPERIMENT_ID} =~ "$experiment" && span.{names.PHASE_NAME} =~ "$phase" '
             f"&& duration > $min_duration }} | select(resource.{names.DL_RANK})")
    return [
        dashboard.Row("From traces (Tempo span metrics)"),
        graph("Phase p95 by span name (Tempo span metrics)",
              "From Tempo's span metrics (collector/tempo.yaml). "
              f"{NO_SPAN_METRICS}; the lezea_phase_duration panels below show every run.",
              [promql(f"histogram_quantile(0.95, {_span_latency('$__rate_interval')})", legend(SPAN_NAME),
                      exemplar=True)],
              unit="s"),
        (bargauge.Panel().title("Slowest phases in range (p95)")
         .description("The ten slowest phases by p95 over the range, from Tempo's span metrics (none for "
                      "replayed runs: see the lezea_phase_duration panels).")
         .datasource(PROMETHEUS).unit("s").span(12).height(8)
         .with_target(promql(slowest, legend(SPAN_NAME), instant=True))
         .orientation(common_model.VizOrientation.HORIZONTAL)
         .display_mode(common_model.BarGaugeDisplayMode.GRADIENT).show_unfilled(True)
         .min_viz_width(8).min_viz_height(16)  # Grafana 11+ defaults; the SDK would write 0 and 10
         .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))),
        graph("Phase calls per second",
              "Phase spans per second, from Tempo's span metrics (none for replayed runs).",
              [promql(f"sum by ({SPAN_NAME}) (rate({SPAN_CALLS}{{{CHOSEN}}}[$__rate_interval]))",
                            legend(SPAN_NAME))],
              unit="reqps", height=7),
        graph("Phase errors per second",
              "Phase spans that ended with an error, per second, from Tempo's span metrics (none for "
              "replayed runs).",
              [promql(f"sum by ({SPAN_NAME}) (rate({SPAN_CALLS}{{{CHOSEN}, "
                            f'{STATUS_CODE}="STATUS_CODE_ERROR"}}[$__rate_interval]))', legend(SPAN_NAME))],
              unit="reqps", height=7),
        (table.Panel().title("Slow phase spans (TraceQL)")
         .description("Spans of tracker.span() phases slower than $min_duration; "
                      "click a trace id to open it.")
         .datasource(TEMPO).span(24).height(10).show_header(True)
         .with_target(_Spans(spans, limit=50, spans_per_set=5))),
    ]


def _from_metrics() -> list[Builder[Any]]:
    bucket = f"{PHASE_DURATION}_bucket{{{CHOSEN}}}"
    return [
        dashboard.Row(f"From metrics ({PHASE_DURATION})"),
        graph("Phase duration p95 (histogram)",
              f"p95 of each phase from the {PHASE_DURATION} histogram, replayed runs included.",
              [promql(f"histogram_quantile(0.95, sum by (le, {PHASE}) (rate({bucket}[$__rate_interval])))",
                      legend(PHASE), exemplar=True)],
              unit="s"),
        (heatmap.Panel().title("Phase duration distribution")
         .description("How many phase spans ended in each duration bucket per interval (the chosen phases "
                      "together).")
         .datasource(PROMETHEUS).span(12).height(8)
         .with_target(promql(f"sum by (le) (increase({bucket}[$__rate_interval]))", legend("le"))
                      .format(prometheus_model.PromQueryFormat.HEATMAP))
         .calculate(False).y_axis(heatmap.YAxisConfig().unit("s")).cell_gap(1)
         .color(heatmap.HeatmapColorOptions().mode(heatmap_model.HeatmapColorMode.SCHEME).scheme("Oranges")
                .steps(64))
         .exemplars_color("rgba(255,0,255,0.7)").show_tooltip().show_y_histogram()),
        graph("Phase time share",
              "Seconds each rank spends in each phase per second of wall time (nested phases overlap).",
              [promql(f"sum by ({EXPERIMENT_NAME}, {PHASE}, {RANK}) "
                            f"(rate({PHASE_DURATION}_sum{{{CHOSEN}}}[$__rate_interval]))",
                            f"{legend(EXPERIMENT_NAME, PHASE)} rank {legend(RANK)}")],
              unit="percentunit", width=24, height=7),
    ]


def _ranks() -> list[Builder[Any]]:
    ratio = "Slowest / median"
    # The table's columns in order: a query label or value (``Value #<refId>``) -> its header.
    columns = {EXPERIMENT_NAME: "Experiment", EXPERIMENT: "Experiment id", PHASE: "Phase",
               RANK: "Slowest rank", "Value #A": "p95 slowest rank", "Value #B": "p95 median rank",
               "Value #C": "p95 fastest rank", "Value #D": ratio}
    straggler = (Table().title("Straggler per phase (p95 in range)")
                 .description("Per run and phase: the rank with the highest p95 over the time range, its "
                              "p95, the median and fastest rank's p95, and slowest / median (1.00 = "
                              "balanced). p95 interpolates inside histogram buckets.")
                 .datasource(PROMETHEUS).span(12).height(9)
                 .field_options(common_builders.TableFieldOptions().align(common_model.FieldTextAlignment.AUTO)
                                .cell_options(common_model.TableAutoCellOptions()).filterable(True))
                 .override_by_regexp("p95.*", [model.DynamicConfigValue(id_val="unit", value="s")])
                 .override_by_name(ratio, [
                     model.DynamicConfigValue(id_val="decimals", value=2),
                     model.DynamicConfigValue(id_val="unit", value="suffix:×"),
                     model.DynamicConfigValue(id_val="thresholds", value=model.ThresholdsConfig(
                         mode=model.ThresholdsMode.ABSOLUTE,
                         steps=[model.Threshold(value=None, color="green"),
                                model.Threshold(value=1.2, color="orange"),
                                model.Threshold(value=1.5, color="red")])),
                     model.DynamicConfigValue(id_val="custom.cellOptions",
                                              value=common_model.TableColorTextCellOptions())])
                 .show_header(True).cell_height(common_model.TableCellHeight.SM)
                 .footer(common_builders.TableFooterOptions().show(False).reducer(["sum"]))
                 .sort_by([common_builders.TableSortByFieldState().display_name(ratio).desc(True)])
                 .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
                 .with_transformation(model.DataTransformerConfig(id_val="organize", options={
                     "excludeByName": {"Time": True},
                     "indexByName": {column: index for index, column in enumerate(columns)},
                     "renameByName": columns}))
                 .with_transformation(model.DataTransformerConfig(id_val="sortBy", options={
                     "sort": [{"field": ratio, "desc": True}]})))
    for ref, expr in _straggler_queries().items():
        straggler = straggler.with_target(promql(expr, "__auto", ref=ref, instant=True, table=True))
    return [
        dashboard.Row(f"Ranks (stragglers, from {PHASE_DURATION})"),
        graph("Phase p95 by rank",
              f"p95 of each phase on each rank ({RANK}) over {THRESHOLDS['window'].value}: the recording "
              f"rule {PHASE_P95} that LezeaSlowPhaseRank reads. Every rank exports its phase histogram even "
              "when its spans are not exported.",
              [promql(f"{PHASE_P95}{{{CHOSEN}}}", f"{legend(EXPERIMENT_NAME, PHASE)} rank {legend(RANK)}")],
              unit="s", height=9),
        straggler,
        graph("Data-wait share by rank",
              f"Share of wall time each rank waits for its next batch (tracker.iterate) over "
              f"{THRESHOLDS['window'].value}: the recording rule {DATA_WAIT} that LezeaDataLoaderStarved "
              "reads.", [promql(f"{DATA_WAIT}{{{RUNS_AND_RANKS}}}", f"{legend(EXPERIMENT_NAME)} rank "
                                f"{legend(RANK)}")],
              unit="percentunit", width=24, height=7),
    ]


def build() -> dict[str, Any]:
    return board("lezea-slow-phases", "lezea / Slow phases",
                 "Which tracker.span() phases are slow: Tempo span metrics, TraceQL and the phase histogram.",
                 _variables(), [*_from_traces(), *_from_metrics(), *_ranks()], since="now-6h")
