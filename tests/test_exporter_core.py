"""The exporter's core, against a real run: its audit, converted, gives what the in-process pipeline gave.

One tracker run (every kind of record, nested scopes and phases, an error, a scope left open at
finalize) is captured in memory through ``lezea_otel.testing.Capture``; its ``events.jsonl`` is read
with the exporter's cursor and converted. Parity is asserted where the audit holds the facts; where it
does not yet, the tests pin down exactly what differs (the trainer's next slice adds those fields).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.json.file import FileMetricExporter, FileSpanExporter
from opentelemetry.exporter.otlp.json.file._log_exporter import FileLogExporter
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.trace import format_span_id, format_trace_id

from lezea_otel import semconv as names
from lezea_otel.audit.reader import read_events
from lezea_otel.exporter import AuditCursor, AuditRecord, Batch, RunConverter, merge_metrics
from lezea_otel.testing import Capture

OBSERVED = ("process.", "system.", "hw.", "lezea.gpu.", "lezea.torch.", "lezea.process.", "lezea.export.")
"""Metrics of the observers, liveness and the exporter's own delivery: not made from records."""


@dataclasses.dataclass
class Run:
    capture: Capture
    audit: Path
    records: list[AuditRecord]
    reference_metrics: MetricsData


def _scenario(tracker: Any, checkpoint: Path) -> None:
    tracker.log_lezea_config(tasker_population_size=3, hyperparameters={"lr": 0.1})
    with tracker.builder_scope("42"):
        with tracker.network_scope("n/1", "tasker"), tracker.span("forward", batch=3):
            tracker.log_training_step(1, {"loss": 0.5, "acc": 0.25}, data_split="train")
            with tracker.span("inner"):  # a phase inside a phase
                tracker.log_comment("inside")
        tracker.log_training_step(2, {"loss": 0.25, "bad": float("nan")})
        tracker.log_checkpoint(str(checkpoint), step=2)
        with pytest.raises(ValueError), tracker.span("fails"):
            raise ValueError("boom")
    with tracker.span("outer"), tracker.tasker_scope("t1"):  # a scope inside a phase
        tracker.log_reward("a1", 0.75)
    tracker.log_results(result_dict={"r": 1.0}, tasker_rewards={"t2": 0.5}, action_outputs=[1, 2])
    tracker.log_resource("gpu0", cpu=50, mem=100)
    tracker.log_component_resources("c1", "encoder", cpu_percent=20.0, io_operations=5)
    tracker.log_resource_cost(cpu_hours=1.0, cost_eur=2.0)
    tracker.log_resource_cost(cost_eur=2.0)
    tracker.log_data_splits(train_ids=[1, 2, 3], val_ids=[4])
    tracker.log_data_usage([1, 2], epoch=1)
    tracker.log_data_score("s1", 0.5, 0.25)
    tracker.log_delta_loss(1, 0.5, 0.75)
    tracker.log_modification_tree(step=1, modifications=[{"a": 1}], statistics={"depth": 2.0})
    tracker.log_modification_stats({"x": 1.5})
    tracker.log_business_metrics(resource_cost_eur=3.0, users=1.0)
    tracker.log_dataset_version("ds", "v1")
    tracker.log_conclusion("done")
    tracker.algorithm_scope("left-open").__enter__()  # never exited: truncated by finalize


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("exporter_core")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEZEA_RAISE_INTERNAL", "1")
        patch.setenv("LEZEA_QUIET", "1")
        patch.setenv("LEZEA_SCOPE_RESOURCES", "none")  # measured live only: a converter of the audit has none
        patch.chdir(folder)
        capture = Capture(folder / "runs")
        tracker = capture.tracker("parity", auto_start=True, purpose="check", tags=["a", "b"])
        checkpoint = folder / "model.ckpt"
        checkpoint.write_bytes(b"weights")
        _scenario(tracker, checkpoint)
        tracker.finalize_experiment()
        reference = capture.metrics_data()
    assert reference is not None
    return Run(capture, tracker.audit_path, _read_all(AuditCursor(tracker.audit_path), final=True), reference)


def _read_all(cursor: AuditCursor, final: bool = False) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    while batch := cursor.read(final=final):
        records.extend(batch)
    return records


def _convert(records: list[AuditRecord]) -> tuple[Batch, MetricsData | None]:
    converter = RunConverter()
    batch = converter.feed(records)
    assert converter.failed == 0, converter.problems
    return batch, converter.collect()


def _points(data: MetricsData | None) -> dict[tuple[str, tuple[Any, ...]], tuple[Any, ...]]:
    """(name, attributes) -> (value, unit, description, time) of every point, observers left out."""
    out: dict[tuple[str, tuple[Any, ...]], tuple[Any, ...]] = {}
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name.startswith(OBSERVED) or metric.name == names.RUN_HEARTBEAT:
                    continue
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum, tuple(point.bucket_counts), point.min, point.max)
                    attributes = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                                              for k, v in (point.attributes or {}).items()))
                    out[(metric.name, attributes)] = (value, metric.unit, metric.description,
                                                      point.time_unix_nano)
    return out


def _events(span: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


class TestSpans:
    def test_every_span_has_the_trainers_ids_names_times_and_status(self, run: Run) -> None:
        """Every span, the root included: same id, trace, name, status and exact start and end."""
        batch, _ = _convert(run.records)
        mine = {span.context.span_id: span for span in batch.spans}
        reference = [s for s in run.capture.spans() if s.name != names.STARTED_SPAN_NAME]
        assert sorted(s.name for s in reference) == ["algorithm", "builder", names.ROOT_SPAN_NAME, "fails",
                                                     "forward", "inner", "network", "outer", "tasker"]
        for span in reference:
            made = mine[span.context.span_id]
            assert (made.name, made.context.trace_id) == (span.name, span.context.trace_id)
            assert (made.status.status_code, made.status.description) == (
                span.status.status_code, span.status.description)
            assert (made.start_time, made.end_time) == (span.start_time, span.end_time), span.name
        root = mine[next(s for s in reference if s.name == names.ROOT_SPAN_NAME).context.span_id]
        assert root.parent is None

    def test_attributes_and_events_match_exactly(self, run: Run) -> None:
        """Attributes (config on the root, a phase's own, resources, truncation) and events (the exception
        with its module-qualified type and stack trace) are the in-process ones."""
        batch, _ = _convert(run.records)
        mine = {span.context.span_id: span for span in batch.spans}
        for span in run.capture.spans():
            made = mine.get(span.context.span_id)
            if made is None:
                continue
            assert dict(made.attributes or {}) == dict(span.attributes or {}), span.name
            assert _events(made) == _events(span), span.name
        (forward,) = [s for s in batch.spans if s.name == "forward"]
        assert forward.attributes["batch"] == 3  # tracker.span("forward", batch=3)
        (left_open,) = [s for s in batch.spans if s.name == "algorithm"]
        assert left_open.attributes[names.SPAN_TRUNCATED] is True
        (fails,) = [s for s in batch.spans if s.name == "fails"]
        ((event_name, exception),) = _events(fails)
        assert (event_name, exception["exception.type"], exception["exception.message"]) == (
            "exception", "ValueError", "boom")
        stacktrace = exception["exception.stacktrace"]
        assert "Traceback" in stacktrace and "boom" in stacktrace

    def test_nesting_is_exact_under_scopes_and_phases(self, run: Run) -> None:
        """Parents come from the records' ``parent_span_id``: a scope or phase inside a phase hangs under
        it."""
        batch, _ = _convert(run.records)
        made = {s.context.span_id: s.parent.span_id for s in batch.spans if s.parent is not None}
        parents = {s.context.span_id: s.parent.span_id for s in run.capture.spans() if s.parent is not None}
        assert made == parents
        by_id = {span.context.span_id: span.name for span in batch.spans}
        assert {by_id[s.context.span_id]: by_id[made[s.context.span_id]] for s in batch.spans
                if s.name in ("inner", "tasker")} == {"inner": "forward", "tasker": "outer"}

    def test_without_parent_ids_an_old_audit_nests_by_scope_path(self, run: Run) -> None:
        """An audit from before ``parent_span_id``: parents are derived from the scope paths, exact except
        a phase or scope inside a phase, which hangs under the enclosing scope."""
        records = [dataclasses.replace(r, parent_span_id=None) for r in run.records]
        batch, _ = _convert(records)
        mine = {span.context.span_id: span for span in batch.spans}
        by_id = {span.context.span_id: span for span in run.capture.spans()}
        wrong = []
        for span in run.capture.spans():
            made = mine.get(span.context.span_id)
            if made is None or span.parent is None:
                continue
            if made.parent is None or made.parent.span_id != span.parent.span_id:
                wrong.append((span.name, by_id[span.parent.span_id].name))
        assert sorted(wrong) == [("inner", "forward"), ("tasker", "outer")]

    def test_started_marker_is_a_child_of_the_root_with_a_stable_id(self, run: Run) -> None:
        (reference,) = run.capture.spans(names.STARTED_SPAN_NAME)
        first, _ = _convert(run.records)
        again, _ = _convert(run.records)
        (made,) = [s for s in first.spans if s.name == names.STARTED_SPAN_NAME]
        (made_again,) = [s for s in again.spans if s.name == names.STARTED_SPAN_NAME]
        assert made.context.span_id == made_again.context.span_id == reference.context.span_id
        assert made.parent is not None and reference.parent is not None
        assert made.parent.span_id == reference.parent.span_id
        assert dict(made.attributes or {}) == dict(reference.attributes or {})
        assert made.start_time == made.end_time == run.records[0].time_ns


class TestLogs:
    def test_log_records_match_and_point_at_their_spans(self, run: Run) -> None:
        """Event name, body, severity, time, trace/span ids and attributes of every log record."""
        batch, _ = _convert(run.records)
        reference = run.capture.logs()
        assert len(batch.logs) == len(reference) == 15
        fields = ("event_name", "body", "severity_text", "severity_number", "timestamp", "trace_id",
                  "span_id", "trace_flags")
        for made, expected in zip(batch.logs, reference, strict=True):
            for field in fields:
                assert getattr(made.log_record, field) == getattr(expected.log_record, field), field
            assert dict(made.log_record.attributes or {}) == dict(expected.log_record.attributes or {})
        spans = {s.context.span_id: s.name for s in batch.spans}
        inside = next(r for r in batch.logs if r.log_record.body == "inside")
        assert spans[inside.log_record.span_id] == "inner"

    def test_resource_holds_the_run_identity(self, run: Run) -> None:
        """The resource the trainer resolved (instance id, runtime, git, ranks) is the exported one."""
        batch, _ = _convert(run.records)
        assert dict(batch.logs[0].resource.attributes) == dict(run.capture.spans()[0].resource.attributes)
        old = [dataclasses.replace(r, data={k: v for k, v in r.data.items() if k != "resource"})
               if r.kind == "experiment_start" else r for r in run.records]
        first, second = _convert(old)[0], _convert(old)[0]  # an audit from before the resource was written
        assert first.logs[0].resource.attributes[names.SERVICE_INSTANCE_ID] == \
            second.logs[0].resource.attributes[names.SERVICE_INSTANCE_ID]

    def test_points_match_the_in_process_metrics(self, run: Run) -> None:
        """Names, values, attributes, units and descriptions of every record-made metric point."""
        _, data = _convert(run.records)
        mine, reference = _points(data), _points(run.reference_metrics)
        start_key = next(k for k in reference if k[0] == names.RUN_START_TIME)
        assert abs(mine.pop(start_key)[0] - reference.pop(start_key)[0]) < 1.0
        assert len(reference) == 38
        assert {k: v[:3] for k, v in mine.items()} == {k: v[:3] for k, v in reference.items()}

    def test_each_point_is_at_its_records_time(self, run: Run) -> None:
        _, data = _convert(run.records)
        steps = [r for r in run.records if r.kind == "training_step"]
        mine = _points(data)
        loss = {k: v for k, v in mine.items() if k[0] == "lezea.training.loss"}
        assert sorted(v[3] for v in loss.values()) == [r.time_ns for r in steps]
        assert mine[next(k for k in mine if k[0] == names.TRAINING_STEP)][3] == steps[-1].time_ns

    def test_phase_exemplars_link_to_the_phase_spans(self, run: Run) -> None:
        def exemplars(data: MetricsData | None) -> dict[str, list[tuple[int, int]]]:
            out = {}
            for metric in (m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                           if m.name == names.PHASE_DURATION):
                for point in metric.data.data_points:
                    name = point.attributes[names.PHASE_NAME]
                    out[name] = [(e.trace_id, e.span_id) for e in point.exemplars]
            return out

        batch, data = _convert(run.records)
        mine, reference = exemplars(data), exemplars(run.reference_metrics)
        assert mine == reference and set(mine) == {"forward", "inner", "fails", "outer"}
        phases = {s.name: (s.context.trace_id, s.context.span_id) for s in batch.spans}
        assert all(mine[name] == [phases[name]] for name in mine)

    def test_collect_gives_what_changed_since_the_last_collect(self, run: Run) -> None:
        converter = RunConverter()
        steps = [i for i, r in enumerate(run.records) if r.kind == "training_step"]
        converter.feed(run.records[: steps[-1]])
        assert converter.collect() is not None
        converter.feed([run.records[steps[-1]]])
        changed = {name for name, _ in _points(converter.collect())}
        assert changed == {names.TRAINING_STEP, names.TRAINING_LAST_STEP_TIME, names.TRAINING_NONFINITE,
                           "lezea.training.loss"}  # "bad" is NaN: counted, and no gauge point
        assert converter.collect() is None
        assert len(_points(converter.collect(everything=True))) > len(changed)


class TestEncoding:
    def test_otlp_json_lines_hold_the_ids_and_times(self, run: Run) -> None:
        """The official OTLP-JSON file exporters write what the core made: hex ids, string nanoseconds."""
        batch, data = _convert(run.records)
        streams = [io.StringIO() for _ in range(3)]
        FileSpanExporter(stream=streams[0]).export(batch.spans)
        FileLogExporter(stream=streams[1]).export(batch.logs)
        assert data is not None
        FileMetricExporter(stream=streams[2]).export(data)
        spans_line, logs_line, metrics_line = (json.loads(s.getvalue()) for s in streams)
        (scope_spans,) = spans_line["resourceSpans"][0]["scopeSpans"]
        written = {s["spanId"]: s for s in scope_spans["spans"]}
        for span in batch.spans:
            line = written[format_span_id(span.context.span_id)]
            assert line["traceId"] == format_trace_id(span.context.trace_id)
            assert line["startTimeUnixNano"] == str(span.start_time)
            parent = format_span_id(span.parent.span_id) if span.parent else ""
            assert line.get("parentSpanId", "") == parent
        log_lines = logs_line["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        assert [r["spanId"] for r in log_lines] == [format_span_id(r.log_record.span_id) for r in batch.logs]
        metric_names = [m["name"] for m in metrics_line["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]]
        assert len(metric_names) == len(set(metric_names)) > 20

    def test_merged_metrics_of_two_audits_survive_the_proto_encoder(self, run: Run) -> None:
        """Two files of one process identity: the proto encoder keeps only the last of equal resources,
        so their metrics are merged by (resource, scope) first."""
        cut = next(i for i, r in enumerate(run.records) if r.kind == "reward")
        first, second = RunConverter(), RunConverter()
        first.feed(run.records[:cut])
        second.feed([run.records[0], *run.records[cut:]])
        parts = [first.collect(), second.collect()]
        assert parts[0] is not None and parts[1] is not None

        def encoded(data: MetricsData | None) -> set[str]:
            assert data is not None
            request = encode_metrics(data)
            return {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

        naive = MetricsData([*parts[0].resource_metrics, *parts[1].resource_metrics])
        assert encoded(naive) == encoded(parts[1])  # the first file's metrics silently lost
        assert encoded(merge_metrics(parts)) == encoded(parts[0]) | encoded(parts[1])


class TestCursor:
    def test_cursor_reads_what_read_events_reads(self, run: Run) -> None:
        expected = list(read_events(run.audit))
        assert [r.seq for r in run.records] == [e["seq"] for e in expected]
        assert [repr(r.data) for r in run.records] == [repr(e["data"]) for e in expected]
        bad = next(r for r in run.records if r.kind == "training_step" and "bad" in str(r.data))
        assert math.isnan(bad.metric_values()["bad"])

    def test_a_torn_last_line_waits_for_its_end(self, tmp_path: Path) -> None:
        lines = _lines(3)
        audit = tmp_path / "events.jsonl"
        audit.write_bytes(lines[0] + lines[1] + lines[2][:7])
        cursor = AuditCursor(audit)
        assert [r.seq for r in _read_all(cursor)] == [1, 2]
        assert cursor.read() == [] and cursor.at_end
        with open(audit, "ab") as handle:
            handle.write(lines[2][7:])
        assert [r.seq for r in cursor.read()] == [3]
        with open(audit, "ab") as handle:
            handle.write(b'{"seq": 4, "ti')  # the writer died mid-line
        assert cursor.read(final=True) == [] and cursor.skipped_lines == 1 and cursor.problems

    def test_resume_from_the_persisted_position_and_rewind_after_failure(self, tmp_path: Path) -> None:
        audit, state = tmp_path / "events.jsonl", tmp_path / "export" / "cursor.json"
        audit.write_bytes(b"".join(_lines(6)))
        cursor = AuditCursor(audit, state, chunk_bytes=150)
        delivered = cursor.read()
        cursor.commit()
        assert 0 < len(delivered) < 6
        lost = cursor.read()  # read, but its delivery failed
        cursor.rewind()
        assert cursor.read() == lost
        resumed = AuditCursor(audit, state)
        assert [r.seq for r in _read_all(resumed)] == list(range(len(delivered) + 1, 7))

    def test_a_file_that_changed_under_the_cursor_is_read_again_without_repeats(self, tmp_path: Path) -> None:
        audit, state = tmp_path / "events.jsonl", tmp_path / "cursor.json"
        lines = _lines(5)
        audit.write_bytes(b"".join(lines[:3]))
        cursor = AuditCursor(audit, state)
        _read_all(cursor)
        cursor.commit()
        audit.write_bytes(b'{"seq": 1}\n' + b"".join(lines[3:]))  # rewritten: shorter than the offset
        resumed = AuditCursor(audit, state)
        assert [r.seq for r in _read_all(resumed)] == [4, 5]
        assert resumed.problems and resumed.skipped_lines == 1

    def test_corrupt_and_missing_lines_are_counted_not_fatal(self, tmp_path: Path) -> None:
        lines = _lines(5)
        audit = tmp_path / "events.jsonl"
        audit.write_bytes(lines[0] + b"\x00garbage\n" + lines[1] + lines[4])
        cursor = AuditCursor(audit)
        assert [r.seq for r in _read_all(cursor)] == [1, 2, 5]
        assert (cursor.skipped_lines, cursor.missing_seqs) == (1, 2)

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8), chunk=st.integers(40, 4000))
    def test_reading_while_written_gives_every_record_once_in_order(self, run: Run, tmp_path: Path,
                                                                     cuts: list[int], chunk: int) -> None:
        """However the writer's bytes arrive, reads between them give each record exactly once."""
        data = run.audit.read_bytes()
        audit = tmp_path / "growing.jsonl"
        audit.write_bytes(b"")
        cursor, seen = AuditCursor(audit, chunk_bytes=chunk), []
        points = sorted(cut % len(data) for cut in cuts)
        for start, end in zip([0, *points], [*points, len(data)], strict=True):
            with open(audit, "ab") as handle:
                handle.write(data[start:end])
            seen.extend(r.seq for r in _read_all(cursor))
        assert seen == [r.seq for r in run.records]
        assert cursor.problems == []


class TestResume:
    def test_resuming_at_any_record_finishes_the_same_spans_and_logs(self, run: Run) -> None:
        """State is a function of the records: skip the delivered prefix, convert the rest, same output."""
        full = RunConverter()
        outputs = [full.feed([record]) for record in run.records]
        for cut in range(1, len(run.records), 3):
            resumed = RunConverter()
            resumed.skip(run.records[:cut])
            rest = resumed.feed(run.records[cut:])
            expected = [s for batch in outputs[cut:] for s in batch.spans]
            assert [(s.name, s.context.span_id, s.parent, s.start_time, s.end_time, dict(s.attributes or {}))
                    for s in rest.spans] == [(s.name, s.context.span_id, s.parent, s.start_time, s.end_time,
                                              dict(s.attributes or {})) for s in expected]
            assert [r.log_record.body for r in rest.logs] == [r.log_record.body for b in outputs[cut:]
                                                              for r in b.logs]

    def test_a_crashed_run_ends_its_open_scopes_truncated_and_the_root_crashed(self, run: Run) -> None:
        cut = next(i for i, r in enumerate(run.records) if r.kind == "phase")  # inside builder and network
        converter = RunConverter()
        converter.feed(run.records[:cut])
        ended = converter.end_crashed()
        assert [s.name for s in ended.spans] == ["network", "builder", names.ROOT_SPAN_NAME]
        assert all(s.attributes[names.SPAN_TRUNCATED] for s in ended.spans[:2])
        assert ended.spans[-1].attributes[names.RUN_STATUS] == "crashed"
        assert all(s.end_time == run.records[cut - 1].time_ns for s in ended.spans)


def _lines(count: int) -> list[bytes]:
    """Minimal audit lines with seq 1..count."""
    return [json.dumps({"seq": seq, "time_unix_nano": 1_700_000_000_000_000_000 + seq, "kind": "comment",
                        "step": None, "scope": "", "trace_id": None, "span_id": None,
                        "data": {"text": f"line {seq}"}}).encode() + b"\n" for seq in range(1, count + 1)]


class TestPointTimes:
    """Prometheus stores milliseconds and refuses a second value of a series in one (rolling back the whole
    OTLP request): collected points of a series never share a millisecond, and an unchanged counter or
    histogram collected again moves on with the newest record, so ``rate()`` sees it go on."""

    def test_a_value_set_in_the_millisecond_of_the_last_point_goes_out_a_millisecond_later(self, run: Run):
        start, *rest = run.records
        step = next(r for r in rest if r.kind == "training_step")
        converter = RunConverter()
        converter.feed([start])
        base = (start.time_ns // 1_000_000 + 5) * 1_000_000
        converter.feed([dataclasses.replace(step, time_ns=base + 200_000)])
        first = _points(converter.collect(everything=True))
        again = {key: 0.125 for key in step.data["metrics"]}
        converter.feed([dataclasses.replace(step, time_ns=base + 700_000,  # the same millisecond
                                            data={**step.data, "metrics": again})])
        second = _points(converter.collect(everything=True))
        key = next(k for k in first if k[0] == "lezea.training.loss")
        assert first[key][0] == 0.5 and first[key][3] == base + 200_000
        assert second[key][0] == 0.125 and second[key][3] == base + 1_000_000  # one millisecond on

    def test_an_unchanged_counter_moves_on_with_the_records_and_a_gauge_stays(self, run: Run):
        records = [r for r in run.records if r.kind != "experiment_end"]
        converter = RunConverter()
        converter.feed(records)
        before = _points(converter.collect(everything=True))
        later = dataclasses.replace(records[-1], kind="note", time_ns=records[-1].time_ns + 3_000_000_000)
        converter.feed([later])  # a record that changes no metric, 3 s later
        after = _points(converter.collect(everything=True))
        counter = next(k for k in before if k[0] == "lezea.phase.duration")
        gauge = next(k for k in before if k[0] == "lezea.training.loss")
        assert after[counter][0] == before[counter][0] and after[counter][3] == later.time_ns
        assert after[gauge] == before[gauge]  # the same point again: Prometheus takes it as a duplicate
