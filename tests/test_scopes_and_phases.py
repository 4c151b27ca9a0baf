"""Scopes, phases and the experiment's lifecycle, through the public API: spans, histograms, audit,
summary."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from opentelemetry.trace import StatusCode

from lezea_otel import ExperimentTracker, NetworkType

SCOPE_CALLS = ("builder_scope", "tasker_scope", "algorithm_scope", "network_scope", "layer_scope")


def audit(tracker: ExperimentTracker, kind: str | None = None) -> list[dict]:
    """The raw lines of ``events.jsonl`` under the run folder (flushed through a public call first)."""
    tracker.get_experiment_data()  # drains and flushes the audit
    lines = (tracker.run_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return [e for e in events if kind is None or e["kind"] == kind]


def hex_span(span) -> str:
    return format(span.context.span_id, "016x")


def hex_trace(span) -> str:
    return format(span.context.trace_id, "032x")


class TestRootSpan:
    def test_root_span_is_open_until_finalize(self, capture):
        """The 'experiment' span is not exported while the run lives, and exactly once after finalize."""
        tracker = capture.tracker("root", auto_start=True)
        tracker.log_training_step(1, {"loss": 1.0})
        assert capture.spans("experiment") == []
        tracker.finalize_experiment()
        assert len(capture.spans("experiment")) == 1

    def test_root_span_carries_experiment_identity(self, capture):
        """The root span names the experiment id, name and purpose and ends with status 'finished'."""
        tracker = capture.tracker("ident", purpose="sanity", auto_start=True)
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        assert root.parent is None
        assert root.attributes["lezea.experiment.id"] == tracker.experiment_id
        assert root.attributes["lezea.experiment.name"] == "ident"
        assert root.attributes["lezea.experiment.purpose"] == "sanity"
        assert root.attributes["lezea.run.status"] == "finished"
        assert root.attributes["lezea.run.ended_by"] == "finalize_experiment"

    def test_root_span_spans_the_whole_run(self, capture):
        """Every scope span of the run lies inside the root span's time window and trace."""
        tracker = capture.tracker("window", auto_start=True)
        with tracker.builder_scope("1"):
            pass
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        (builder,) = capture.spans("builder")
        assert root.start_time <= builder.start_time <= builder.end_time <= root.end_time
        assert builder.context.trace_id == root.context.trace_id

    def test_audit_lines_outside_scopes_carry_root_span(self, capture):
        """A record made outside any scope is tied to the root span's trace and span id in the audit."""
        tracker = capture.tracker("rootids", auto_start=True)
        tracker.log_training_step(1, {"loss": 1.0})
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        (step,) = audit(tracker, "training_step")
        assert step["scope"] == ""
        assert step["trace_id"] == hex_trace(root)
        assert step["span_id"] == hex_span(root)


class TestScopeSpans:
    @pytest.mark.parametrize("call", SCOPE_CALLS)
    def test_each_scope_is_a_child_span_named_by_level(self, capture, call):
        """Every *_scope opens a child of the root span named after its level, with level/id/path
        attributes."""
        level = call.removesuffix("_scope")
        tracker = capture.tracker("levels", auto_start=True)
        with getattr(tracker, call)("x1"):
            pass
        tracker.finalize_experiment()
        (root,) = capture.spans("experiment")
        (span,) = capture.spans(level)
        assert span.parent.span_id == root.context.span_id
        assert span.attributes["lezea.scope.level"] == level
        assert span.attributes["lezea.scope.id"] == "x1"
        assert span.attributes["lezea.scope"] == f"{level}:x1"
        assert span.attributes["lezea.experiment.id"] == tracker.experiment_id

    def test_non_string_id_is_used_as_text(self, capture):
        """An integer id (layer_scope(3)) becomes the scope id '3' in the span and path."""
        tracker = capture.tracker("intid", auto_start=True)
        with tracker.layer_scope(3):
            tracker.log_training_step(1, {"loss": 0.1})
        tracker.finalize_experiment()
        (layer,) = capture.spans("layer")
        assert layer.attributes["lezea.scope.id"] == "3"
        assert audit(tracker, "training_step")[0]["data"]["metrics"] == {"layer:3/loss": 0.1}

    def test_three_deep_nesting_links_parents(self, capture):
        """builder > tasker > layer form a parent chain of span ids under the root, with the full path."""
        tracker = capture.tracker("nest", auto_start=True)
        with tracker.builder_scope("42"), tracker.tasker_scope("A"), tracker.layer_scope("L1"):
            pass
        tracker.finalize_experiment()
        root, builder, tasker, layer = (capture.spans(n)[0]
                                        for n in ("experiment", "builder", "tasker", "layer"))
        assert builder.parent.span_id == root.context.span_id
        assert tasker.parent.span_id == builder.context.span_id
        assert layer.parent.span_id == tasker.context.span_id
        assert layer.attributes["lezea.scope"] == "builder:42/tasker:A/layer:L1"
        assert tasker.attributes["lezea.scope"] == "builder:42/tasker:A"
        assert {s.context.trace_id for s in (root, builder, tasker, layer)} == {root.context.trace_id}

    def test_five_levels_nest_in_one_with_statement(self, capture):
        """All five scope kinds stacked in one with-statement make a five-deep chain of spans."""
        tracker = capture.tracker("five", auto_start=True)
        with tracker.builder_scope("b"), tracker.tasker_scope("t"), tracker.algorithm_scope("a"), \
                tracker.network_scope("n"), tracker.layer_scope("l"):
            pass
        tracker.finalize_experiment()
        spans = {s.name: s for s in capture.spans()}
        chain = ["experiment", "builder", "tasker", "algorithm", "network", "layer"]
        for parent, child in zip(chain, chain[1:], strict=False):
            assert spans[child].parent.span_id == spans[parent].context.span_id

    def test_sibling_scopes_share_the_parent(self, capture):
        """After a scope ends, the next scope is a sibling under the same parent, not a child of the old
        one."""
        tracker = capture.tracker("siblings", auto_start=True)
        with tracker.builder_scope("1"):
            with tracker.tasker_scope("A"):
                pass
            with tracker.tasker_scope("B"):
                pass
        with tracker.builder_scope("2"):
            pass
        tracker.finalize_experiment()
        root = capture.spans("experiment")[0]
        builders = {s.attributes["lezea.scope.id"]: s for s in capture.spans("builder")}
        taskers = {s.attributes["lezea.scope.id"]: s for s in capture.spans("tasker")}
        assert builders["2"].parent.span_id == root.context.span_id
        assert taskers["A"].parent.span_id == taskers["B"].parent.span_id == builders["1"].context.span_id
        assert taskers["B"].attributes["lezea.scope"] == "builder:1/tasker:B"

    def test_network_type_enum_sets_attribute(self, capture):
        """network_scope('n1', NetworkType.HYBRID) marks its span with lezea.network.type='hybrid'."""
        tracker = capture.tracker("net", auto_start=True)
        with tracker.network_scope("n1", NetworkType.HYBRID):
            pass
        with tracker.network_scope("n2", "builder"):
            pass
        with tracker.network_scope("n3"):
            pass
        tracker.finalize_experiment()
        types = {s.attributes["lezea.scope.id"]: s.attributes.get("lezea.network.type")
                 for s in capture.spans("network")}
        assert types == {"n1": "hybrid", "n2": "builder", "n3": None}

    def test_unknown_network_type_does_not_raise(self, capture, lezea_warnings):
        """An unknown network_type string warns and still opens the scope instead of raising into training."""
        tracker = capture.tracker("badnet", auto_start=True)
        ran = False
        with tracker.network_scope("n1", "quantum"):
            ran = True
            tracker.log_training_step(1, {"loss": 0.3})
        tracker.finalize_experiment()
        assert ran
        assert any("network" in message for message in lezea_warnings())
        assert capture.spans("network")[0].attributes["lezea.scope.id"] == "n1"

    def test_scope_start_and_end_are_audited(self, capture):
        """Entering and leaving a scope writes scope_start/scope_end lines with level, id and duration."""
        tracker = capture.tracker("auditscope", auto_start=True)
        with tracker.tasker_scope("T9"):
            pass
        tracker.finalize_experiment()
        (start,) = audit(tracker, "scope_start")
        (end,) = audit(tracker, "scope_end")
        (span,) = capture.spans("tasker")
        assert start["data"] == {"level": "tasker", "id": "T9"}
        assert end["data"]["level"] == "tasker" and end["data"]["duration_s"] >= 0
        assert start["scope"] == end["scope"] == "tasker:T9"
        assert start["span_id"] == end["span_id"] == hex_span(span)


class TestScopeErrors:
    def test_exception_is_reraised_as_the_same_object(self, capture):
        """The user's exception leaves the scope unchanged: same object, same type, same message."""
        tracker = capture.tracker("raise", auto_start=True)
        error = RuntimeError("bad batch 17")
        with pytest.raises(RuntimeError) as caught, tracker.builder_scope("7"):
            raise error
        assert caught.value is error
        assert str(caught.value) == "bad batch 17"
        tracker.finalize_experiment()

    def test_exception_marks_span_error_with_event(self, capture):
        """The scope's span gets ERROR status and an 'exception' event naming the type and message."""
        tracker = capture.tracker("errspan", auto_start=True)
        with pytest.raises(ZeroDivisionError), tracker.algorithm_scope("sac"):
            1 / 0  # noqa: B018
        tracker.finalize_experiment()
        (span,) = capture.spans("algorithm")
        assert span.status.status_code == StatusCode.ERROR
        assert "ZeroDivisionError" in span.status.description
        (event,) = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "ZeroDivisionError"
        assert "division by zero" in event.attributes["exception.message"]

    def test_exception_through_nested_scopes_marks_each(self, capture):
        """An exception crossing two scopes marks both spans ERROR; the root span stays finished."""
        tracker = capture.tracker("errnest", auto_start=True)
        with pytest.raises(KeyError), tracker.builder_scope("1"), tracker.tasker_scope("A"):
            raise KeyError("missing")
        summary = tracker.finalize_experiment()
        assert capture.spans("builder")[0].status.status_code == StatusCode.ERROR
        assert capture.spans("tasker")[0].status.status_code == StatusCode.ERROR
        assert capture.spans("experiment")[0].status.status_code != StatusCode.ERROR
        assert summary["scopes"]["builder:1"]["errors"] == 1
        assert summary["scopes"]["builder:1/tasker:A"]["errors"] == 1

    def test_scope_stack_recovers_after_exception(self, capture):
        """After an exception leaves a scope, later records are no longer prefixed with it."""
        tracker = capture.tracker("recover", auto_start=True)
        with pytest.raises(ValueError), tracker.builder_scope("1"):
            raise ValueError
        tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        (step,) = audit(tracker, "training_step")
        assert step["data"]["metrics"] == {"loss": 0.5}
        assert step["scope"] == ""

    def test_error_is_audited_on_scope_end(self, capture):
        """The scope_end audit line names the exception type and message."""
        tracker = capture.tracker("errline", auto_start=True)
        with pytest.raises(ValueError), tracker.builder_scope("1"):
            raise ValueError("nan grad")
        tracker.finalize_experiment()
        (end,) = audit(tracker, "scope_end")
        assert end["data"]["error"] == "ValueError: nan grad"

    def test_successful_scope_is_not_error(self, capture):
        """A scope that completes normally does not get ERROR status nor an exception event."""
        tracker = capture.tracker("ok", auto_start=True)
        with tracker.builder_scope("1"):
            pass
        tracker.finalize_experiment()
        (span,) = capture.spans("builder")
        assert span.status.status_code != StatusCode.ERROR
        assert not [e for e in span.events if e.name == "exception"]


class TestPhases:
    def test_context_manager_makes_child_span(self, capture):
        """with tracker.span('forward') makes a 'forward' span under the current span with its attributes."""
        tracker = capture.tracker("phasecm", auto_start=True)
        with tracker.builder_scope("1"), tracker.span("forward", batch=32):
            pass
        tracker.finalize_experiment()
        (forward,) = capture.spans("forward")
        (builder,) = capture.spans("builder")
        assert forward.parent.span_id == builder.context.span_id
        assert forward.attributes["lezea.phase.name"] == "forward"
        assert forward.attributes["lezea.scope"] == "builder:1"
        assert forward.attributes["batch"] == 32
        assert forward.attributes["lezea.experiment.id"] == tracker.experiment_id

    def test_phase_does_not_prefix_keys(self, capture):
        """A phase is not a scope: training keys logged inside it keep their plain names but its span id."""
        tracker = capture.tracker("phasekeys", auto_start=True)
        with tracker.span("forward"):
            tracker.log_training_step(1, {"loss": 0.5})
        tracker.finalize_experiment()
        (step,) = audit(tracker, "training_step")
        assert step["data"]["metrics"] == {"loss": 0.5}
        assert step["span_id"] == hex_span(capture.spans("forward")[0])

    def test_decorator_preserves_return_value_and_metadata(self, capture):
        """@tracker.span keeps the function's result, arguments and name, and records one span per call."""
        tracker = capture.tracker("deco", auto_start=True)

        @tracker.span("step_fn")
        def train_step(x: int, *, scale: int = 1) -> dict:
            """Docstring kept."""
            return {"out": x * scale}

        assert train_step(3, scale=2) == {"out": 6}
        assert train_step(1) == {"out": 1}
        assert train_step.__name__ == "train_step"
        assert train_step.__doc__ == "Docstring kept."
        tracker.finalize_experiment()
        assert len(capture.spans("step_fn")) == 2

    def test_decorator_recursion_nests_spans(self, capture):
        """A recursive decorated function makes one span per call, each the child of its caller's span."""
        tracker = capture.tracker("recurse", auto_start=True)

        @tracker.span("fact")
        def fact(n: int) -> int:
            return 1 if n <= 1 else n * fact(n - 1)

        assert fact(4) == 24
        tracker.finalize_experiment()
        spans = capture.spans("fact")
        assert len(spans) == 4
        by_id = {s.context.span_id: s for s in spans}
        roots = [s for s in spans if s.parent.span_id not in by_id]
        assert len(roots) == 1 and roots[0].parent.span_id == capture.spans("experiment")[0].context.span_id
        depth, node = 1, roots[0]
        while True:
            children = [s for s in spans if s.parent.span_id == node.context.span_id]
            if not children:
                break
            (node,) = children
            depth += 1
        assert depth == 4

    def test_decorator_exception_propagates_unchanged(self, capture):
        """An exception raised by a decorated function propagates as the same object, span marked ERROR."""
        tracker = capture.tracker("decoerr", auto_start=True)
        error = OverflowError("boom")

        @tracker.span("bad")
        def bad() -> None:
            raise error

        with pytest.raises(OverflowError) as caught:
            bad()
        assert caught.value is error
        summary = tracker.finalize_experiment()
        assert capture.spans("bad")[0].status.status_code == StatusCode.ERROR
        assert summary["phases"]["bad"]["errors"] == 1

    def test_same_block_reused_sequentially_and_nested(self, capture):
        """One TracedBlock object can be entered twice in a row and nested in itself without mixing frames."""
        tracker = capture.tracker("reuse", auto_start=True)
        block = tracker.span("io")
        with block, block:
            pass
        with block:
            pass
        tracker.finalize_experiment()
        spans = capture.spans("io")
        assert len(spans) == 3
        ids = {s.context.span_id for s in spans}
        assert sum(1 for s in spans if s.parent.span_id in ids) == 1
        assert tracker.get_experiment_summary()["phases"]["io"]["count"] == 3

    def test_phase_duration_histogram(self, capture):
        """Each phase call records lezea.phase.duration (seconds) with lezea.phase.name; counts add up."""
        tracker = capture.tracker("hist", auto_start=True)
        for _ in range(3):
            with tracker.span("forward"):
                pass
        with tracker.span("backward"):
            pass
        (forward,) = capture.points("lezea.phase.duration", lezea__phase__name="forward")
        (backward,) = capture.points("lezea.phase.duration", lezea__phase__name="backward")
        assert forward.value["count"] == 3 and backward.value["count"] == 1
        assert forward.unit == "s" and forward.kind == "Histogram"
        assert forward.value["sum"] >= 0
        assert forward.attributes["lezea.experiment.id"] == tracker.experiment_id
        tracker.finalize_experiment()

    def test_phase_histogram_carries_scope(self, capture):
        """A phase inside a scope records its duration with that scope as an attribute, separately from
        outside."""
        tracker = capture.tracker("histscope", auto_start=True)
        with tracker.builder_scope("42"), tracker.span("forward"):
            pass
        with tracker.span("forward"):
            pass
        points = capture.points("lezea.phase.duration", lezea__phase__name="forward")
        assert sorted(p.attributes.get("lezea.scope", "") for p in points) == ["", "builder:42"]
        tracker.finalize_experiment()

    def test_phase_histogram_exemplar_links_span(self, capture):
        """The duration histogram's exemplar points at the phase's own span and trace."""
        tracker = capture.tracker("exemplar", auto_start=True)
        with tracker.span("forward"):
            pass
        data = capture.metrics_data()
        exemplars = [e for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                     if m.name == "lezea.phase.duration" for p in m.data.data_points for e in p.exemplars]
        tracker.finalize_experiment()
        (span,) = capture.spans("forward")
        assert exemplars, "no exemplar on lezea.phase.duration"
        assert exemplars[0].span_id == span.context.span_id
        assert exemplars[0].trace_id == span.context.trace_id

    def test_phase_is_audited(self, capture):
        """Leaving a phase writes a 'phase' audit line with its name and duration under its span id."""
        tracker = capture.tracker("phaseaudit", auto_start=True)
        with tracker.span("eval"):
            pass
        tracker.finalize_experiment()
        (line,) = audit(tracker, "phase")
        assert line["data"]["name"] == "eval" and line["data"]["duration_s"] >= 0
        assert line["span_id"] == hex_span(capture.spans("eval")[0])


class TestRecordsInsideScopes:
    def test_training_keys_are_prefixed_in_audit(self, capture):
        """Inside builder_scope('42') the audit key of loss is 'builder:42/loss'."""
        tracker = capture.tracker("prefix", auto_start=True)
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 0.42, "acc": 0.9})
        tracker.finalize_experiment()
        (step,) = audit(tracker, "training_step")
        assert step["data"]["metrics"] == {"builder:42/loss": 0.42, "builder:42/acc": 0.9}
        assert step["scope"] == "builder:42"

    def test_records_carry_the_innermost_span_id(self, capture):
        """Each audit line carries the span id of the innermost open scope at the time of the call."""
        tracker = capture.tracker("spanid", auto_start=True)
        with tracker.builder_scope("42"):
            tracker.log_comment("in builder")
            with tracker.tasker_scope("A"):
                tracker.log_training_step(1, {"loss": 1.0})
            tracker.log_training_step(2, {"loss": 0.5})
        tracker.finalize_experiment()
        builder, tasker = capture.spans("builder")[0], capture.spans("tasker")[0]
        comment = audit(tracker, "comment")[0]
        first, second = audit(tracker, "training_step")
        assert comment["span_id"] == hex_span(builder)
        assert first["span_id"] == hex_span(tasker)
        assert first["data"]["metrics"] == {"builder:42/tasker:A/loss": 1.0}
        assert second["span_id"] == hex_span(builder)
        assert second["data"]["metrics"] == {"builder:42/loss": 0.5}
        assert first["trace_id"] == second["trace_id"] == hex_trace(builder)

    def test_log_record_inside_scope_is_correlated_with_scope_span(self, capture):
        """A comment logged in a scope is a log record in that scope's span, with the scope path attribute."""
        tracker = capture.tracker("logscope", auto_start=True)
        with tracker.tasker_scope("A"):
            tracker.log_comment("hello")
        tracker.finalize_experiment()
        (record,) = capture.logs("lezea.comment")
        (tasker,) = capture.spans("tasker")
        assert record.log_record.span_id == tasker.context.span_id
        assert record.log_record.attributes["lezea.scope"] == "tasker:A"

    def test_scopes_are_isolated_between_threads(self, capture):
        """A scope open in the main thread does not prefix values logged from another thread."""
        tracker = capture.tracker("threads", auto_start=True)

        def worker() -> None:
            tracker.log_training_step(1, {"worker_loss": 0.1})

        with tracker.builder_scope("main"):
            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
            tracker.log_training_step(1, {"main_loss": 0.2})
        tracker.finalize_experiment()
        keys = [set(e["data"]["metrics"]) for e in audit(tracker, "training_step")]
        assert {"worker_loss"} in keys and {"builder:main/main_loss"} in keys

    def test_scopes_are_isolated_between_asyncio_tasks(self, capture):
        """Two concurrent asyncio tasks, each in its own builder scope, prefix only their own values."""
        tracker = capture.tracker("tasks", auto_start=True)

        async def agent(name: str) -> None:
            with tracker.builder_scope(name):
                await asyncio.sleep(0)
                tracker.log_training_step(1, {"loss": float(len(name))})
                await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.gather(agent("a"), agent("bb"))

        asyncio.run(main())
        tracker.finalize_experiment()
        metrics = [e["data"]["metrics"] for e in audit(tracker, "training_step")]
        assert sorted(metrics, key=str) == [{"builder:a/loss": 1.0}, {"builder:bb/loss": 2.0}]
        builders = capture.spans("builder")
        root = capture.spans("experiment")[0]
        assert all(b.parent.span_id == root.context.span_id for b in builders)

    def test_async_mode_keeps_scope_and_span_ids(self, capture):
        """In async_mode the audit still carries the scope prefix and the scope's span id."""
        tracker = capture.tracker("async", auto_start=True, async_mode=True)
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 0.4})
        tracker.finalize_experiment()
        (step,) = audit(tracker, "training_step")
        assert step["data"]["metrics"] == {"builder:42/loss": 0.4}
        assert step["span_id"] == hex_span(capture.spans("builder")[0])


class TestSummaryScopesAndPhases:
    def test_scope_counts_per_path(self, capture):
        """summary()['scopes'] counts each scope path's entries and keeps nested paths apart."""
        tracker = capture.tracker("counts", auto_start=True)
        for _ in range(3):
            with tracker.builder_scope("1"), tracker.tasker_scope("A"):
                pass
        with tracker.builder_scope("2"):
            pass
        scopes = tracker.get_experiment_summary()["scopes"]
        assert scopes["builder:1"]["count"] == 3
        assert scopes["builder:1/tasker:A"]["count"] == 3
        assert scopes["builder:2"]["count"] == 1
        assert all(entry["errors"] == 0 for entry in scopes.values())
        assert scopes["builder:1"]["total_s"] >= scopes["builder:1"]["max_s"] >= 0
        tracker.finalize_experiment()

    def test_phase_counts_and_errors(self, capture):
        """summary()['phases'] counts calls per phase name and how many of them raised."""
        tracker = capture.tracker("phasecounts", auto_start=True)
        for i in range(4):
            try:
                with tracker.span("forward"):
                    if i % 2:
                        raise ValueError(i)
            except ValueError:
                pass
        phases = tracker.get_experiment_summary()["phases"]
        assert phases["forward"]["count"] == 4
        assert phases["forward"]["errors"] == 2
        tracker.finalize_experiment()

    def test_scope_errors_become_recommendation(self, capture):
        """A scope that raised is named in get_recommendations() with its error count."""
        tracker = capture.tracker("screc", auto_start=True)
        with pytest.raises(ValueError), tracker.builder_scope("9"):
            raise ValueError
        items = [r for r in tracker.get_recommendations() if r["rule"] == "scope_errors"]
        assert items and items[0]["evidence"] == {"scope": "builder:9", "errors": 1}
        tracker.finalize_experiment()


class TestLifecycle:
    def test_auto_start_starts_at_construction(self, capture, monkeypatch):
        """ExperimentTracker(..., auto_start=True) opens the run in the constructor: audit has
        experiment_start."""
        monkeypatch.setenv("LEZEA_PROMETHEUS_PORT", "0")
        tracker = ExperimentTracker(
            "auto", auto_start=True, runs_dir=capture.runs_dir, quiet=True,
            extra_exporters=(capture.spans_exporter, capture.metric_reader, capture.logs_exporter))
        kinds = [e["kind"] for e in audit(tracker)]
        assert kinds[0] == "experiment_start"
        assert tracker.get_experiment_summary()["status"] == "running"
        tracker.finalize_experiment()
        assert len(capture.spans("experiment")) == 1

    def test_without_auto_start_nothing_is_started(self, capture):
        """Without auto_start the run is only 'created' and no experiment_start is in the audit."""
        tracker = capture.tracker("manual")
        assert tracker.get_experiment_summary()["status"] == "created"
        assert audit(tracker, "experiment_start") == []
        tracker.start(prometheus_port=None)
        assert tracker.get_experiment_summary()["status"] == "running"
        tracker.finalize_experiment()

    def test_second_start_does_nothing(self, capture):
        """Calling start() twice makes one run: one experiment_start line and one root span."""
        tracker = capture.tracker("twice", auto_start=True)
        assert tracker.start(prometheus_port=None) is tracker
        tracker.finalize_experiment()
        assert len(audit(tracker, "experiment_start")) == 1
        assert len(capture.spans("experiment")) == 1

    def test_finalize_returns_summary_and_is_idempotent(self, capture):
        """finalize_experiment() returns the finished summary; calling it again ends nothing twice."""
        tracker = capture.tracker("idem", auto_start=True)
        tracker.log_training_step(1, {"loss": 0.3})
        first = tracker.finalize_experiment()
        second = tracker.finalize_experiment()
        assert first["status"] == second["status"] == "finished"
        assert first["steps"]["count"] == 1
        assert len(capture.spans("experiment")) == 1
        assert len(audit(tracker, "experiment_end")) == 1
        assert len(capture.logs("lezea.experiment.finished")) == 1

    def test_end_is_finalize(self, capture):
        """end() finalizes like finalize_experiment(), and either order after it adds no second root span."""
        tracker = capture.tracker("end", auto_start=True)
        summary = tracker.end()
        assert summary["status"] == "finished"
        tracker.finalize_experiment()
        tracker.end()
        (root,) = capture.spans("experiment")
        assert root.attributes["lezea.run.ended_by"] == "finalize_experiment"
        assert [e["data"]["status"] for e in audit(tracker, "experiment_end")] == ["finished"]

    def test_open_scope_at_finalize_still_exports_root(self, capture):
        """Finalizing while a scope is open still ends and exports the root span exactly once."""
        tracker = capture.tracker("openscope", auto_start=True)
        with tracker.builder_scope("1"):
            tracker.finalize_experiment()
        assert len(capture.spans("experiment")) == 1
        tracker.end()
        assert len(capture.spans("experiment")) == 1
