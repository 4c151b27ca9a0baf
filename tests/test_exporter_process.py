"""The exporter beside the trainer, as a user meets it: a process of its own that completes a killed
run, that the trainer replaces when it dies, and that nests the user's own OTel spans under scopes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from lezea_otel import ExperimentTracker

from .otlp_receiver import HttpReceiver

LONG_SCOPE = """
import sys
from lezea_otel import ExperimentTracker
tracker = ExperimentTracker("killed", runs_dir=sys.argv[1], quiet=True)
tracker.start(prometheus_port=None)
with tracker.builder_scope("7"):
    with tracker.span("forward"):
        pass
    tracker.log_training_step(1, {"loss": 0.5})
    print(tracker.experiment_id, flush=True)
    sys.stdin.readline()  # the test kills us here, inside the scope
"""


def _spans(run_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(span, resource attributes) of the run's OTLP-JSON spans file."""
    out = []
    path = run_dir / "otlp" / "spans.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        for resource_spans in json.loads(line)["resourceSpans"]:
            resource = {a["key"]: next(iter(a["value"].values()))
                        for a in resource_spans["resource"]["attributes"]}
            out += [(span, resource) for scope in resource_spans["scopeSpans"] for span in scope["spans"]]
    return out


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


def _exporters(pid: int, run_dir: Path | None = None) -> list[psutil.Process]:
    """The exporter processes a trainer started (``python -m lezea_otel.exporter``), of ``run_dir``'s run
    when given (an earlier test's may still finish its run in the background)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            command = child.cmdline()
            if "lezea_otel.exporter" in command and (run_dir is None or str(run_dir) in command):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _collector_cursor(run_dir: Path) -> int:
    """The seq up to which the collector's follower committed (0 before its first commit)."""
    cursors = [json.loads(p.read_text()) for p in (run_dir / "exporter").glob("otlp-*-run.json")]
    return max((cursor["seq"] for cursor in cursors), default=0)


def _last_seq(audit: Path) -> int:
    lines = audit.read_text().splitlines()
    return json.loads(lines[-1])["seq"] if lines else -1


def _wait_for(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_trainer_is_completed_by_its_exporter(tmp_path: Path) -> None:
    """kill -9 inside a scope: within seconds the exporter process ends the open scope truncated, the
    root as crashed, writes everything to the run's files and exits — no export command needed."""
    env = {k: v for k, v in os.environ.items() if k != "LEZEA_RAISE_INTERNAL"}
    env["LEZEA_EXPORTER"] = "process"
    with subprocess.Popen([sys.executable, "-c", LONG_SCOPE, str(tmp_path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env) as trainer:
        assert trainer.stdout is not None
        run_dir = tmp_path / trainer.stdout.readline().strip()
        (exporter,) = _wait_for(lambda: _exporters(trainer.pid), 10, "the exporter process")
        _wait_for(lambda: any(s["name"] == "forward" for s, _ in _spans(run_dir)), 10, "the phase span")
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
    exporter.wait(15)  # it notices the PID is gone, delivers and exits
    spans = {span["name"]: span for span, _ in _spans(run_dir)}
    assert _attributes(spans["experiment"])["lezea.run.status"] == "crashed"
    builder = spans["builder"]
    assert _attributes(builder)["lezea.span.truncated"] is True
    assert builder["events"][-1]["name"] == "lezea.truncated"
    assert builder["parentSpanId"] == spans["experiment"]["spanId"]
    assert spans["forward"]["parentSpanId"] == builder["spanId"]
    report = json.loads((run_dir / "exporter" / "report.json").read_text())
    assert report["crashed"] is True


def test_an_exporter_that_dies_is_replaced_and_nothing_is_sent_twice(tmp_path: Path, lezea_warnings: Any,
                                                                       monkeypatch: Any) -> None:
    """The exporter process killed mid-run: the trainer warns once, starts another, which resumes from
    the cursors: the collector gets every span exactly once."""
    monkeypatch.setenv("LEZEA_EXPORTER", "process")
    receiver = HttpReceiver()
    try:
        tracker = ExperimentTracker("replaced", runs_dir=tmp_path, endpoint=receiver.endpoint, quiet=True)
        tracker.start(prometheus_port=None)
        for step in range(1, 6):
            with tracker.span("step"):
                tracker.log_training_step(step, {"loss": 1.0 / step})
        _wait_for(lambda: len([s for s in receiver.received.spans() if s.name == "step"]) == 5, 10,
                  "the first five spans at the collector")
        _wait_for(lambda: _collector_cursor(tracker.run_dir) == _last_seq(tracker.audit_path), 10,
                  "the collector's cursor past them")  # (a kill between its ack and the commit resends)
        (first,) = _exporters(os.getpid(), tracker.run_dir)
        first.kill()  # the trainer's watcher reaps it and starts another
        replacement = _wait_for(lambda: [p for p in _exporters(os.getpid(), tracker.run_dir)
                                         if p.pid != first.pid], 10,
                                "a new exporter process")
        for step in range(6, 11):
            with tracker.span("step"):
                tracker.log_training_step(step, {"loss": 1.0 / step})
        summary = tracker.finalize_experiment()
        replacement[0].wait(10)
    finally:
        receiver.stop()
    names = sorted(span.name for span in receiver.received.spans())
    assert names == sorted(["step"] * 10 + ["experiment", "experiment.started"])
    (warning,) = [m for m in lezea_warnings() if "exporter process ended early" in m]
    assert "resumes from its cursor" in warning
    # what the replacement delivered in the end (on a loaded machine it may still have been catching up
    # when finalize stopped waiting for a collector that took nothing for a second: then it finished alone)
    assert summary is not None
    report = json.loads((tracker.run_dir / "exporter" / "report.json").read_text())
    spans = report["destinations"]["otlp"]["signals"]["traces"]
    assert report["finishing"] is False and "held" not in spans, spans
    assert spans["exported"] == spans["produced"], spans


def test_the_users_own_spans_nest_under_the_trackers_scopes(capture: Any) -> None:
    """A span of the user's own OpenTelemetry SDK started inside a scope or phase is its child, in the
    experiment's trace (the current OTel context carries the tracker's ids); outside, it is not."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mine = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mine))
    tracer = provider.get_tracer("user code")
    tracker = capture.tracker("nesting", auto_start=True)
    with tracer.start_as_current_span("before"):
        pass
    with tracker.builder_scope("1"):
        with tracer.start_as_current_span("data loading"):
            pass
        with tracker.span("forward"), tracer.start_as_current_span("matmul"):
            pass
    with tracer.start_as_current_span("after"):
        pass
    tracker.finalize_experiment()
    ours = {span.name: span for span in capture.spans()}
    theirs = {span.name: span for span in mine.get_finished_spans()}
    assert theirs["data loading"].parent.span_id == ours["builder"].context.span_id
    assert theirs["matmul"].parent.span_id == ours["forward"].context.span_id
    assert theirs["matmul"].context.trace_id == ours["experiment"].context.trace_id
    assert theirs["after"].parent == theirs["before"].parent  # the scope's context was detached on exit
    assert theirs["after"].context.trace_id != ours["experiment"].context.trace_id


def test_async_mode_reads_values_when_the_call_is_made(capture: Any) -> None:
    """async_mode=True: a value that changes after the call (a parameter updated by optimizer.step())
    is recorded as it was when log_training_step was called."""

    import torch

    tracker = capture.tracker("async", auto_start=True, async_mode=True)
    weight = torch.nn.Parameter(torch.tensor(1.0))
    for step in range(1, 201):
        tracker.log_training_step(step, {"weight": weight})
        with torch.no_grad():
            weight.add_(1.0)  # the optimizer step, right after the call returns
    tracker.finalize_experiment()
    events = [json.loads(line) for line in tracker.audit_path.read_text().splitlines()]
    recorded = [e["data"]["metrics"]["weight"] for e in events if e["kind"] == "training_step"]
    assert recorded == [float(step) for step in range(1, 201)]
