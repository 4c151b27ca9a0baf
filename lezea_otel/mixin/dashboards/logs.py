"""lezea / Logs: the log records of the chosen runs in Loki, errors and warnings first.

Loki keeps the experiment id as an index label (``collector/loki.yaml``) and the rest (``trace_id``,
``severity_text``, the record's attributes) as structured metadata: ``| lezea_experiment_id=~"..."`` filters
on either, and a record's ``trace_id`` opens its trace (the Loki datasource's derived field).
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard, logs
from grafana_foundation_sdk.models import common as common_model

from lezea_otel.mixin.dashboards.common import (
    LOKI,
    RUNS,
    board,
    graph,
    logql,
    query_variable,
    run_variables,
    single,
)

STREAMS = f'{{service_name=~"$service"}} | {RUNS}'
"""The log records of the chosen services and runs (``service_name``: Loki's label of ``service.name``)."""
ERRORS = 'severity_text=~"(?i)error|critical|fatal"'
WARNINGS = 'severity_text=~"(?i)warn(ing)?"'


def _records(title: str, description: str, expr: str, height: int) -> logs.Panel:
    return (logs.Panel().title(title).description(description).datasource(LOKI).span(24).height(height)
            .with_target(logql(expr)).show_time(True).show_labels(False).show_common_labels(False)
            .wrap_log_message(True).prettify_log_message(False).enable_log_details(True)
            .dedup_strategy(common_model.LogsDedupStrategy.NONE)
            .sort_order(common_model.LogsSortOrder.DESCENDING))


def build() -> dict[str, Any]:
    variables = [*run_variables(),
                 query_variable("service", "Service", "label_values(service_name)", datasource=LOKI),
                 dashboard.TextBoxVariable("search").label("Line contains (regex)")]
    panels = [
        graph("Log records by severity", "Records per interval of the chosen runs, one line per severity.",
              [logql(f"sum by (severity_text) (count_over_time({STREAMS} [$__interval]))",
                     "{{severity_text}}")],
              datasource=LOKI, height=7),
        single("Errors in range", "Records of severity error, critical or fatal in the time range.",
               logql(f"sum(count_over_time({STREAMS} | {ERRORS} [$__range]))", "errors", instant=True),
               datasource=LOKI, height=7, steps=((None, "green"), (1, "red"))),
        single("Warnings in range", "Records of severity warning in the time range.",
               logql(f"sum(count_over_time({STREAMS} | {WARNINGS} [$__range]))", "warnings", instant=True),
               datasource=LOKI, height=7, steps=((None, "green"), (1, "orange"))),
        _records("Errors", "The error, critical and fatal records, newest first.",
                 f"{STREAMS} | {ERRORS}", 9),
        _records("Logs", "Every record of the chosen runs whose line matches the search, newest first; "
                 "trace_id links open the trace in Tempo (a derived field on structured metadata).",
                 f'{STREAMS} |~ "$search"', 14),
    ]
    return board("lezea-logs", "lezea / Logs",
                 "Log records of lezea_otel runs in Loki, filtered by experiment id (structured metadata).",
                 variables, panels)
