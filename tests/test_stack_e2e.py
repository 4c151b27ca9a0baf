"""A training run through the real stack: the lezea Collector distribution on the shipped
``otelcol-config.yaml``, Prometheus 3 with compose's flags and the shipped ``prometheus.yaml`` (its OTLP
receiver), and recording OTLP receivers standing in for Tempo and Loki at the wire (both ingest OTLP
natively; ``tests/otlp_receiver.py``).

Every signal must arrive whole: the spans and log records the exporter wrote to the run's local OTLP files
are the ones the Tempo and Loki stand-ins receive, parents and trace ids intact; the training values reach
Prometheus with their labels. Every dashboard query must answer the same series on both metric paths, the
run pushed through the Collector and the same run scraped from its /metrics; and killing the Collector
(SIGKILL) and restarting Prometheus mid-run loses nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lezea_otel import ExperimentTracker
from lezea_otel.mixin.promql import EXPERIMENT
from lezea_otel.mixin.rules import DATA_WAIT, PHASE_P95, STEP_RATE, rules

from .fake_nvml import FakeGpu
from .otlp_receiver import GrpcReceiver, HttpReceiver, Received
from .stack import Collector, Prometheus, file_log_count, file_spans, free_port, received_spans, wait_until
from .test_dashboards import prometheus_queries, substitute
from .test_observers_gpu import install as install_nvml

DASHBOARDS = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"


class Stack:
    """Collector -> Prometheus 3 (metrics), a gRPC stand-in for Tempo, an HTTP one for Loki."""

    def __init__(self, workdir: Path) -> None:
        self.tempo = GrpcReceiver(keep_alive=True)
        self.loki = HttpReceiver(keep_alive=True)
        self.collector = Collector(workdir / "otelcol",
                                   TEMPO_OTLP_ENDPOINT=f"127.0.0.1:{self.tempo.port}",
                                   LOKI_OTLP_ENDPOINT=f"{self.loki.endpoint}/otlp")
        # It scrapes the collector's own telemetry (job otel-collector in the shipped config) and evaluates
        # the shipped rules every second.
        self.prometheus = Prometheus(workdir / "prometheus", targets=[self.collector.telemetry_port],
                                     evaluation_interval="1s")
        self.prometheus.start()
        self.collector.env["PROMETHEUS_OTLP_ENDPOINT"] = self.prometheus.otlp_endpoint
        self.collector.start()

    def close(self) -> None:
        self.collector.kill()
        self.prometheus.stop()
        self.tempo.stop()
        self.loki.stop()


@pytest.fixture
def stack(tmp_path):
    made = Stack(tmp_path / "stack")
    yield made
    made.close()


def train(tracker: ExperimentTracker, steps: int, first: int = 1) -> None:
    """A training loop's calls: a scope per step, two phases, values, and a comment every tenth step."""
    for step in range(first, first + steps):
        with tracker.builder_scope("0"):
            with tracker.span("forward"):
                pass
            with tracker.span("backward"):
                pass
            tracker.log_training_step(step, {"loss": 1.0 / step, "acc": step / (step + 1)},
                                      data_split="train")
        if step % 10 == 0:
            tracker.log_comment(f"step {step}")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_run_arrives_whole_through_the_collector(stack, tmp_path, monkeypatch, protocol):
    """Spans with their parents and the experiment id, log records with their trace ids, and metric series
    with their labels, over OTLP gRPC and HTTP into the shipped Collector and on to each backend."""
    monkeypatch.setenv("LEZEA_METRIC_EXPORT_INTERVAL_MS", "500")
    endpoint = stack.collector.grpc_endpoint if protocol == "grpc" else stack.collector.http_endpoint
    tracker = ExperimentTracker("through-the-collector", runs_dir=tmp_path / "runs", endpoint=endpoint,
                                protocol=protocol, quiet=True)
    tracker.start(prometheus_port=None)
    tracker.log_lezea_config(64, 4, "SAC", hyperparameters={"lr": 3e-4})
    train(tracker, 30)
    summary = tracker.finalize_experiment()
    delivery = summary["delivery"]["signals"]
    assert all(delivery[s]["exported"] == delivery[s]["produced"] > 0 for s in ("traces", "metrics", "logs"))

    # Traces: the Tempo stand-in has every span the exporter wrote to the run's file, each with its parent.
    spans = file_spans(tracker)
    arrived = wait_until(lambda: (got := received_spans(stack.tempo.received)).keys() >= spans.keys() and got,
                         f"{len(spans)} spans at the Tempo stand-in")
    assert arrived.keys() == spans.keys()  # none lost, none made up
    (trace_id,) = {span.trace_id.hex() for span in arrived.values()}
    assert trace_id == json.loads(tracker.audit_path.read_text().splitlines()[0])["trace_id"]
    roots = [span for span in arrived.values() if not span.parent_span_id]
    assert [root.name for root in roots] == ["experiment"]
    assert all(span.parent_span_id.hex() in arrived for span in arrived.values() if span.parent_span_id)
    phases = [s for s in arrived.values() if s.name in ("forward", "backward")]
    assert len(phases) == 60
    assert {arrived[p.parent_span_id.hex()].name for p in phases} == {"builder"}
    experiment = {a.key: a.value.string_value for a in phases[0].attributes}["lezea.experiment.id"]
    assert experiment == tracker.experiment_id
    assert {r["service.name"] for r in stack.tempo.received.resources("traces")} == {"lezea"}

    # Logs: the Loki stand-in (at /otlp/v1/logs) has every record, correlated with the run's trace.
    records = wait_until(lambda: len(got := stack.loki.received.log_records()) >= file_log_count(tracker)
                         and got, "the log records at the Loki stand-in")
    assert len(records) == file_log_count(tracker)
    assert {record.trace_id.hex() for record in records} == {trace_id}
    assert {r.event_name for r in records} >= {"lezea.config", "lezea.comment", "lezea.experiment.finished"}

    # Metrics: Prometheus stored the series under the names and labels the dashboards query.
    prometheus = stack.prometheus
    selector = f'lezea_experiment_id="{tracker.experiment_id}"'
    (loss,) = prometheus.wait_for(f'lezea_training_loss{{{selector}}}')
    assert float(loss["value"][1]) == pytest.approx(1 / 30)
    assert loss["metric"] | {"__name__": "", "job": "", "instance": ""} == {
        "__name__": "", "job": "", "instance": "", "lezea_experiment_id": tracker.experiment_id,
        "lezea_experiment_name": "through-the-collector", "lezea_scope": "builder:0",
        "lezea_data_split": "train", "otel_scope_name": "lezea_otel", "otel_scope_version": loss["metric"][
            "otel_scope_version"]}
    assert loss["metric"]["job"] == "lezea"
    counts = prometheus.wait_for(f'lezea_phase_duration_seconds_count{{{selector}}} == 30')
    assert sorted(c["metric"]["lezea_phase_name"] for c in counts) == ["backward", "forward"]
    (state,) = prometheus.wait_for(f'lezea_run_state{{{selector}, lezea_run_status="finished"}} == 1')
    (info,) = prometheus.result(f'target_info{{instance="{loss["metric"]["instance"]}"}}')
    assert info["metric"]["service_name"] == "lezea" and info["metric"]["host_name"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel and variable of every dashboard."""
    return [query for path in sorted(DASHBOARDS.glob("*.json"))
            for query in prometheus_queries(json.loads(path.read_text()))]


def series(answer: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The series of an answer as a dashboard tells them apart: every label but job and instance, which
    name the scrape target or the OTLP sender and no panel reads; a bucket's ``le`` as the number it is.
    (Prometheus itself writes ``le`` two ways: a scrape normalises it to OpenMetrics' ``1.0``, its OTLP
    translation writes ``1``; ``histogram_quantile`` and Grafana's heatmap read it as a number.)"""
    def labels(metric: dict[str, str]) -> dict[str, str]:
        kept = {k: v for k, v in metric.items() if k not in ("job", "instance")}
        return kept | ({"le": repr(float(kept["le"]))} if "le" in kept else {})

    return sorted((labels(r["metric"]) for r in answer), key=lambda kept: json.dumps(kept, sort_keys=True))


def test_every_dashboard_query_answers_the_same_on_both_metric_paths(stack, tmp_path, monkeypatch):
    """One run, scraped from its /metrics by one Prometheus and pushed through the Collector to another's
    OTLP receiver (with GPUs, through the NVML double): every PromQL expression of every dashboard panel and
    variable returns the same series from both, and data from both but for Tempo's span metrics."""
    monkeypatch.setenv("LEZEA_EXPORTER", "thread")  # the observers read the NVML double in this process
    monkeypatch.setenv("LEZEA_METRIC_EXPORT_INTERVAL_MS", "500")
    monkeypatch.setenv("LEZEA_OBSERVE_INTERVAL", "0.5")
    monkeypatch.setenv("LEZEA_COST_LIMIT_EUR", "100")  # the cost limit gauge the cost alert reads
    install_nvml(monkeypatch, [FakeGpu("GPU-00000000-0000-0000-0000-000000000001",
                                       processes=[(os.getpid(), 2 * 2**30)])])
    scrape_port = free_port()
    scraping = Prometheus(tmp_path / "scraping", targets=[scrape_port], evaluation_interval="1s")
    scraping.start()
    pushed = stack.prometheus
    tracker = ExperimentTracker("both-paths", runs_dir=tmp_path / "runs",
                                endpoint=stack.collector.http_endpoint, quiet=True)
    tracker.start(prometheus_port=scrape_port)
    stop = threading.Event()

    def training() -> None:
        tracker.log_training_step(1, {"loss": float("nan")})  # the non-finite panel
        tracker.log_resource("tasker#0", cpu=50.0, gpu=20.0, mem=512.0)
        tracker.log_resource_cost(cpu_hours=0.1, gpu_hours=0.2, cost_eur=1.5)
        step = 1
        while not stop.is_set():
            step += 1
            for _batch in tracker.iterate([step]):  # a data-wait phase, as a DataLoader loop has
                train(tracker, 1, first=step)
            stop.wait(0.05)

    loop = threading.Thread(target=training)
    loop.start()
    try:
        selector = f'lezea_experiment_id="{tracker.experiment_id}"'
        for prometheus in (pushed, scraping):  # samples enough for rate(), deriv() and increase()
            prometheus.wait_for(f"count_over_time(lezea_training_step{{{selector}}}[1m]) >= 4")
            prometheus.wait_for(f"count_over_time(hw_gpu_memory_usage_bytes{{{selector}}}[1m]) >= 3")
            for recorded in (STEP_RATE, PHASE_P95, DATA_WAIT):  # read by the per-rank panels
                prometheus.wait_for(f"{recorded}{{{selector}}}")
        values = {"experiment": tracker.experiment_id, "experiment_name": ".+", "__range": "10m",
                  "__rate_interval": "1m", "__interval": "15s", "stale_after": "60", "rank": ".*",
                  "value": "lezea_training_loss", "phase": ".+", "collector": ".+"}
        compared, collector, from_traces, differing = 0, 0, [], []
        for where, expr in dashboard_queries():
            query = substitute(expr, values)
            answers = pushed.result(query), scraping.result(query)
            if "traces_spanmetrics" in expr:  # Tempo's metrics-generator writes these; it does not run here
                from_traces.append(where)
                assert answers == ([], []), where
            elif "otelcol_" in expr:  # the collector's own telemetry: scraped by the pushed-to Prometheus
                assert answers[0], (where, query)
                collector += 1
            elif not (answers[0] and answers[1]) or series(answers[0]) != series(answers[1]):
                differing.append((where, query, series(answers[0]), series(answers[1])))
            else:
                compared += 1
        assert differing == [], json.dumps(differing, indent=1)
        assert compared >= 50 and len(from_traces) == 4 and collector >= 8

        # The alerting and recording rules name only metrics the run produces, on both paths (the
        # collector's own telemetry aside), and each recording rule has data for this run.
        groups = rules()["groups"]
        exprs = [rule["expr"] for group in groups for rule in group["rules"]]
        named = {name for expr in exprs for name in re.findall(r"([a-zA-Z_][a-zA-Z0-9_:]*)\s*[{\[]", expr)
                 if not name.startswith("otelcol_")}
        assert {"lezea_training_step", "hw_gpu_utilization_ratio", "lezea_cost_limit"} <= named
        for prometheus in (pushed, scraping):
            missing = [name for name in sorted(named) if not prometheus.result(
                f'count({{__name__="{name}", lezea_experiment_id="{tracker.experiment_id}"}})')]
            assert missing == [], missing
            for rule in groups[0]["rules"]:  # the recording rules
                answer = prometheus.result(rule["expr"])
                assert [r for r in answer if r["metric"][EXPERIMENT] == tracker.experiment_id], rule["record"]
    finally:
        stop.set()
        loop.join()
        tracker.finalize_experiment()
        scraping.stop()


def delivered_logs(received: Received) -> set[tuple[int, str, str]]:
    """Log records by identity (time, event, span): the Collector delivers at least once."""
    return {(r.time_unix_nano, r.event_name, r.span_id.hex()) for r in received.log_records()}


def collector_metric(collector: Collector, prefix: str) -> float:
    """The Collector's own telemetry: the sum of the samples whose line starts with ``prefix`` (a name, or a
    name and its first labels); 0 when it has none."""
    _status, body = collector.telemetry()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith(prefix))


def test_a_collector_killed_and_prometheus_restarted_mid_run_lose_nothing(stack, tmp_path, monkeypatch):
    """SIGKILL the Collector mid-run, start it again on its queue folder; then stop Prometheus and start it
    again on its storage, while training goes on. At the end every span and log record the run produced
    reached the Tempo and Loki stand-ins, and Prometheus holds the run's final values: the exporter held its
    cursor while the Collector was gone, the Collector its file queue while Prometheus was."""
    monkeypatch.setenv("LEZEA_METRIC_EXPORT_INTERVAL_MS", "300")
    monkeypatch.setenv("LEZEA_SHUTDOWN_TIMEOUT", "60")
    tracker = ExperimentTracker("outages", runs_dir=tmp_path / "runs", endpoint=stack.collector.http_endpoint,
                                quiet=True)
    tracker.start(prometheus_port=None)
    selector = f'lezea_experiment_id="{tracker.experiment_id}"'
    train(tracker, 20)
    stack.prometheus.wait_for(f"lezea_training_step{{{selector}}} == 20")

    stack.collector.kill()
    train(tracker, 20, first=21)  # nobody listens: the run's exporter keeps it in the audit
    stack.collector.start()
    stack.prometheus.wait_for(f"lezea_training_step{{{selector}}} == 40", timeout_s=60)

    stack.prometheus.stop()
    train(tracker, 20, first=41)  # the Collector takes it and holds it in its file queue
    queued = 'otelcol_exporter_queue_size{data_type="metrics"'
    wait_until(lambda: collector_metric(stack.collector, queued) > 0, "the Collector to queue for Prometheus")
    stack.prometheus.start()
    train(tracker, 20, first=61)
    stack.prometheus.wait_for(f"lezea_training_step{{{selector}}} == 80", timeout_s=90)
    summary = tracker.finalize_experiment()
    assert all(counts["left_in_audit"] == 0 for counts in summary["delivery"]["signals"].values())

    spans = file_spans(tracker)
    wait_until(lambda: received_spans(stack.tempo.received).keys() >= spans.keys(), "every span at Tempo",
               timeout_s=90)
    assert received_spans(stack.tempo.received).keys() == spans.keys()
    wait_until(lambda: len(delivered_logs(stack.loki.received)) >= file_log_count(tracker),
               "every log at Loki", timeout_s=90)
    assert len(delivered_logs(stack.loki.received)) == file_log_count(tracker)
    counts = stack.prometheus.wait_for(f"lezea_phase_duration_seconds_count{{{selector}}} == 80",
                                       timeout_s=90)
    assert len(counts) == 2  # forward and backward, each counted 80 times: no increment lost
    stack.prometheus.wait_for(f'lezea_run_state{{{selector}, lezea_run_status="finished"}} == 1',
                              timeout_s=90)
    # The samples taken while Prometheus was down are stored at their own times, not lost.
    # What the Collector queued while Prometheus was down arrives on its retry, at its own time.
    def stored_while_down() -> bool:
        (history,) = stack.prometheus.result(f"lezea_training_step{{{selector}}}[10m]")
        return any(41 <= float(value) <= 60 for _time, value in history["values"])

    wait_until(stored_while_down, "the steps logged while Prometheus was down", timeout_s=60)
    for refused in ("otelcol_exporter_enqueue_failed", "otelcol_exporter_send_failed"):
        assert collector_metric(stack.collector, refused) == 0, refused


def recorded_ago(tracker: ExperimentTracker, seconds: float) -> int:
    """Make a finished run's audit read as if it had been recorded ``seconds`` earlier (every record's
    time moved back), as a run of last week looks when it is replayed today; its start time, in ns."""
    shift = int(seconds * 1e9)
    lines = []
    for line in tracker.audit_path.read_text().splitlines():
        record = json.loads(line)
        record["time_unix_nano"] -= shift
        moved = datetime.fromtimestamp(record["time_unix_nano"] / 1e9, tz=timezone.utc)
        record["time"] = moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append(json.dumps(record))
    tracker.audit_path.write_text("\n".join(lines) + "\n")
    return int(json.loads(lines[0])["time_unix_nano"])


def export(run: ExperimentTracker, endpoint: str, runs_dir: Path) -> subprocess.CompletedProcess[str]:
    """`lezea-otel export RUN --endpoint URL`, as a user types it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LEZEA_RAISE"))}
    return subprocess.run([sys.executable, "-m", "lezea_otel", "export", run.experiment_id, "--runs-dir",
                           str(runs_dir), "--endpoint", endpoint], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("age", [3600, 7 * 86400, 40 * 86400], ids=["hour-old", "week-old", "40-days-old"])
def test_a_replayed_run_reaches_each_backend_at_its_own_time(stack, tmp_path, monkeypatch, age):
    """`lezea-otel export` of an older run, after live runs filled Prometheus's head: up to the 30 days the
    stack keeps, every signal reaches its backend with the run's own timestamps, and the user is told that
    Tempo makes no span metrics of it; older, the user is warned before, and what Prometheus refuses is
    counted by the Collector, not lost silently."""
    monkeypatch.setenv("LEZEA_METRIC_EXPORT_INTERVAL_MS", "300")
    live = ExperimentTracker("live", runs_dir=tmp_path / "live", endpoint=stack.collector.http_endpoint,
                             quiet=True)
    live.start(prometheus_port=None)
    train(live, 5)
    live.finalize_experiment()
    stack.prometheus.wait_for(f'lezea_training_step{{lezea_experiment_id="{live.experiment_id}"}} == 5')

    runs_dir = tmp_path / "old"
    old = ExperimentTracker("old", runs_dir=runs_dir, quiet=True)  # local mode: no collector then
    old.start(prometheus_port=None)
    train(old, 10)
    old.finalize_experiment()
    started_ns = recorded_ago(old, age)
    done = export(old, stack.collector.http_endpoint, runs_dir)
    assert done.returncode == 0, done.stderr
    assert "Exported to" in done.stdout
    assert "no span metrics" in done.stderr  # Tempo's metrics-generator drops spans older than 30 s
    selector = f'lezea_experiment_id="{old.experiment_id}"'
    at = started_ns / 1e9 + 60  # a minute after the run, the day it ran
    then = f"last_over_time(lezea_training_loss{{{selector}}}[5m] @ {at:.3f})"

    spans = file_spans(old)
    wait_until(lambda: received_spans(stack.tempo.received).keys() >= spans.keys(), "the replayed spans")
    arrived = received_spans(stack.tempo.received)
    assert min(arrived[span_id].start_time_unix_nano for span_id in spans) == started_ns
    wait_until(lambda: {r.trace_id.hex() for r in stack.loki.received.log_records()} >= {
        json.loads(old.audit_path.read_text().splitlines()[0])["trace_id"]}, "the replayed logs")
    if age < 30 * 86400:
        assert "older than" not in done.stderr
        (loss,) = stack.prometheus.wait_for(then)
        assert float(loss["value"][1]) == pytest.approx(0.1)
        assert stack.prometheus.result(f"lezea_training_loss{{{selector}}}") == []  # nothing stamped now
    else:
        assert "older than the 30 days the shipped stack keeps" in done.stderr
        refused = 'otelcol_exporter_send_failed_metric_points'
        wait_until(lambda: collector_metric(stack.collector, refused) > 0, "Prometheus's refusal, counted")
        # ... and the shipped alert on the collector's own telemetry fires, naming the exporter.
        (alert,) = stack.prometheus.wait_for('ALERTS{alertname="LezeaCollectorDroppingData", '
                                             'alertstate="firing"}', timeout_s=60)
        assert alert["metric"]["exporter"] == "otlp_http/prometheus"
        assert alert["metric"]["signal"] == "metric_points"
        assert stack.prometheus.result(then) == []
    for refused in ("otelcol_exporter_send_failed_spans", "otelcol_exporter_send_failed_log_records"):
        assert collector_metric(stack.collector, refused) == 0
    # The live run's samples were not taken along with anything refused.
    assert stack.prometheus.result(f'lezea_training_step{{lezea_experiment_id="{live.experiment_id}"}}')
