"""What every lezea dashboard shares: the datasources (fixed uids, ``grafana/provisioning``), the
experiment and rank variables, query and panel shorthands over ``grafana-foundation-sdk``'s builders, and
:func:`board`, which finishes a dashboard the same way for all (schema version, ids, links, tags).

Queries are built from ``mixin.promql`` (metric and label names from the names module), never typed out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Self

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, loki, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import loki as loki_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

from lezea_otel.mixin.promql import EXPERIMENT, EXPERIMENT_NAME, RANK, RUN_STATE

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="prometheus")
TEMPO = model.DataSourceRef(type_val="tempo", uid="tempo")
LOKI = model.DataSourceRef(type_val="loki", uid="loki")
SCHEMA_VERSION = 39
TAGS = ["lezea", "ml-training"]

RUNS = f'{EXPERIMENT}=~"$experiment"'
"""The runs chosen in the Run variable."""
RUNS_AND_RANKS = f'{RUNS}, {RANK}=~"$rank"'
"""... and the ranks chosen in the Rank variable (All is ``.*``: a single process, without dl_rank, too)."""


def promql(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           exemplar: bool = False, table: bool = False) -> prometheus.Dataquery:
    """A Prometheus query of a panel (``table``: its series as table rows, for table panels)."""
    query = (prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS)
             .editor_mode(prometheus_model.QueryEditorMode.CODE))  # the builder mode would rewrite them
    if legend:
        query = query.legend_format(legend)
    query = query.instant() if instant else query.range()
    if exemplar:
        query = query.exemplar(True)
    if table:
        query = query.format(prometheus_model.PromQueryFormat.TABLE)
    return query


def logql(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> loki.Dataquery:
    query = (loki.Dataquery().expr(expr).ref_id(ref).datasource(LOKI)
             .editor_mode(loki_model.QueryEditorMode.CODE).query_type("instant" if instant else "range"))
    return query.legend_format(legend) if legend else query


class Table(table.Panel):
    """The SDK's table panel with a setter for its cells' field options (``fieldConfig.defaults.custom``),
    which its builder lacks."""

    def field_options(self, options: common_builders.TableFieldOptions) -> Self:
        if self._internal.field_config is None:
            self._internal.field_config = model.FieldConfigSource()
        if self._internal.field_config.defaults is None:
            self._internal.field_config.defaults = model.FieldConfig()
        self._internal.field_config.defaults.custom = options.build()
        return self


def graph(title: str, description: str, queries: Sequence[Builder[Any]], unit: str = "none",
          width: int = 12, height: int = 8, datasource: model.DataSourceRef = PROMETHEUS) -> timeseries.Panel:
    """A time series panel: lines, no points, the legend under it, every series in the tooltip."""
    panel = (timeseries.Panel().title(title).description(description).datasource(datasource).unit(unit)
             .span(width).height(height).draw_style(common_model.GraphDrawStyle.LINE).line_width(1)
             .fill_opacity(0).span_nulls(True)
             .show_points(common_model.VisibilityMode.NEVER)
             .legend(common_builders.VizLegendOptions().display_mode(common_model.LegendDisplayMode.LIST)
                     .placement(common_model.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(common_builders.VizTooltipOptions().mode(common_model.TooltipDisplayMode.MULTI)
                      .sort(common_model.SortOrder.DESCENDING)))
    for query in queries:
        panel = panel.with_target(query)
    return panel


def single(title: str, description: str, query: Builder[Any], unit: str = "none", width: int = 6,
           height: int = 4, datasource: model.DataSourceRef = PROMETHEUS,
           steps: Sequence[tuple[float | None, str]] = ((None, "green"),)) -> stat.Panel:
    """A stat panel of one query's last value, coloured by ``steps`` ((from value, colour), first None)."""
    thresholds = dashboard.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(
        [model.Threshold(value=value, color=color) for value, color in steps])
    return (stat.Panel().title(title).description(description).datasource(datasource).unit(unit)
            .span(width).height(height).with_target(query).thresholds(thresholds)
            .color_mode(common_model.BigValueColorMode.VALUE).graph_mode(common_model.BigValueGraphMode.NONE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def legend(*labels: str) -> str:
    """A legend of the labels' values (``{{label}}``), separated by spaces."""
    return " ".join("{{" + label + "}}" for label in labels)


def query_variable(name: str, label: str, query: str | dict[str, object], all_value: str = ".+",
                   datasource: model.DataSourceRef = PROMETHEUS) -> dashboard.QueryVariable:
    """A multi-select variable with All, refreshed on time range change, sorted. A Prometheus query is
    written in the form Grafana's variable editor saves (``{"query": ...}``)."""
    if datasource is PROMETHEUS and isinstance(query, str):
        query = {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"}
    return (dashboard.QueryVariable(name).label(label).datasource(datasource).query(query).multi(True)
            .include_all(True).all_value(all_value).refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"])))


def run_variables(ranks: bool = False) -> list[dashboard.QueryVariable]:
    """Experiment (by name), Run (experiment id) and, with ``ranks``, Rank (``dl_rank``; All is ``.*``)."""
    variables = [
        query_variable("experiment_name", "Experiment", f"label_values({RUN_STATE}, {EXPERIMENT_NAME})"),
        query_variable("experiment", "Run (experiment id)",
                       f'label_values({RUN_STATE}{{{EXPERIMENT_NAME}=~"$experiment_name"}}, {EXPERIMENT})')]
    if ranks:
        variables.append(query_variable("rank", "Rank", f"label_values({RUN_STATE}{{{RUNS}}}, {RANK})",
                                        all_value=".*"))
    return variables


def board(uid: str, title: str, description: str, variables: Sequence[Builder[Any]],
          items: Sequence[Builder[Any]], since: str = "now-1h") -> dict[str, Any]:
    """The dashboard as the JSON object Grafana provisions: ``items`` are panels and rows, laid out in
    order (12 of 24 columns by default); panels numbered from 1; links to the other lezea dashboards;
    ``since``: the start of its default time range."""
    builder = (dashboard.Dashboard(title).uid(uid).description(description).tags(TAGS).editable()
               .tooltip(model.DashboardCursorSync.CROSSHAIR).refresh("30s").time(since, "now")
               .timezone("browser")
               .link(dashboard.DashboardLink("lezea").type(model.DashboardLinkType.DASHBOARDS).tags(["lezea"])
                     .as_dropdown(True).include_vars(True).keep_time(True)))
    for variable in variables:
        builder = builder.with_variable(variable)
    for item in items:
        builder = builder.with_row(item) if isinstance(item, dashboard.Row) else builder.with_panel(item)
    built: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    built["schemaVersion"] = SCHEMA_VERSION
    for number, panel in enumerate(_panels(built["panels"]), start=1):
        panel["id"] = number
    return built


def _panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        out.append(item)
        out.extend(_panels(item.get("panels", [])))
    return out


def render(built: dict[str, Any]) -> str:
    """The committed file's text: two-space indents, keys in the builder's order, a final newline."""
    return json.dumps(built, indent=2, ensure_ascii=False) + "\n"
