"""The run as the training process holds it: identity, settings, the record path, the scope stack.

One object, composed into the facade (``tracker.py``) with the spec's calls (``spec_calls``) and the
scope calls (``scope_calls``), each of which gets it as an explicit constructor argument: every piece
of state they share is declared here. Its lifecycle: ``start`` (resource, exporter, root span ids,
the start records), records (``emit``), scopes and phases (``enter_block``/``exit_block``), a forked
worker (``continue_in_child``) and the end, exactly once (``finalize``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.audit.record import Kind, Record
from lezea_otel.audit.writer import AuditWriter, open_audit
from lezea_otel.config.launch import derive_experiment_id, exports_spans, launch_of
from lezea_otel.config.settings import Settings
from lezea_otel.exceptions import LezeaConfigError
from lezea_otel.model.run_state import RunState, closing_line
from lezea_otel.trainer import arguments, exit_hooks, membership, span_ids
from lezea_otel.trainer.exporter_link import ExporterLink, delivery_report
from lezea_otel.trainer.pipeline import Pipeline
from lezea_otel.trainer.probes import Probes
from lezea_otel.trainer.resource import build_resource, git_facts
from lezea_otel.trainer.scope_frames import Frame
from lezea_otel.trainer.span_ids import IdSpans
from lezea_otel.trainer.workers import WorkerLink
from lezea_otel.util import ports, values
from lezea_otel.util.environment import describe_environment, host_name
from lezea_otel.util.readable import error_text, exception_fields
from lezea_otel.util.safety import (
    Warnings,
    raise_internal,
    report_internal_error,
    truth,
)
from lezea_otel.version import __version__

ABANDONED_BY = ("atexit", names.ENDED_BY_GARBAGE_COLLECTION)
"""Ends of a run nobody finalized: its status is ``abandoned`` (a forked worker's ends as ``finished``)."""
_SDK_TRACE = "opentelemetry.sdk.trace"
"""Loaded when anything in the process records OTel spans (the user's SDK, Logfire, an exporter thread):
with ``LEZEA_OTEL_CONTEXT=auto`` scopes and phases are then the current context, for those spans to nest
under. Without it no span is recorded that could nest, and a phase's enter and exit right after torch's
compute (caches evicted) costs about 65 µs instead of 103 (``scripts/benchmark.py``, "cold calls")."""


class Session:
    """One experiment run in the training process (see the module docstring)."""

    def __init__(self, experiment_name: Any, purpose: Any, tags: Any, async_mode: Any,
                 options: dict[str, Any], extra_exporters: Any,
                 build_service: Callable[..., Any] | None = None) -> None:
        """Never raises: each argument that cannot be used costs itself, with one warning.
        ``build_service``: the exporter's assembly, for an exporter thread (see ``ExporterLink``)."""
        self._build_service = build_service
        self.warnings = Warnings()
        warn = functools.partial(self.warnings.warn, "ExperimentTracker")
        # Nothing here may raise: each argument that cannot be used costs itself, with one warning.
        self.experiment_name = arguments.name(experiment_name, "experiment_name", warn, "unnamed")
        self.purpose = arguments.name(purpose, "purpose", warn, "", optional=True)
        self.tags = arguments.tags(tags, warn)
        self.settings: Settings = arguments.settings(options, warn)
        self.launch = launch_of(self.settings)
        """Who this process is among the ranks of its launch (torchrun, SLURM, MPI; or none)."""
        self.experiment_id = derive_experiment_id(self.settings, self.launch, self.experiment_name)
        self.otel_context = self.settings.otel_context
        """``LEZEA_OTEL_CONTEXT``: whether a scope or phase becomes the current OTel context."""
        try:
            self.extra_exporters = tuple(extra_exporters)
        except Exception as error:  # noqa: BLE001 - not iterable, or a generator that fails
            warn("extra_exporters must be a sequence of exporters or readers",
                 f"{error_text(error)}; ignored")
            self.extra_exporters = ()
        try:
            self.run_dir, audit = open_audit(self.settings.runs_dir, self.experiment_id, warn,
                                             self.settings.audit_fsync, self.launch.member_dir())
        except (OSError, ValueError) as error:  # a NUL byte in the path, a name the OS refuses outright
            fallback = Path("runs") if self.settings.runs_dir != Path("runs") else Path(tempfile.gettempdir())
            warn("runs_dir cannot be used",
                 f"{error_text(error)}; writing the run under {fallback.absolute()}")
            self.settings = dataclasses.replace(self.settings, runs_dir=fallback)
            self.run_dir, audit = open_audit(fallback, self.experiment_id, warn, self.settings.audit_fsync,
                                             self.launch.member_dir())
        self.state = RunState(self.settings.max_metric_names, warn=self.warnings.warn)
        self.pipeline = Pipeline(audit, self.state, truth(async_mode, "async_mode", warn))
        self.probes = Probes(self.settings, self._write_end, functools.partial(self.warnings.warn, "span"))
        """GPU time and NVTX ranges of scopes and phases."""
        self.stack: contextvars.ContextVar[tuple[Frame, ...]] = contextvars.ContextVar(
            f"lezea_scope_{self.experiment_id}", default=())
        self.spans = IdSpans()
        self.link: ExporterLink | None = None
        self.targets: list[str] = []
        self.workers = WorkerLink()
        """The run's end as its forked workers see it (they end with it; their records fold in)."""
        self.port_held: ports.Reservation | None = None
        """The ``/metrics`` port, locked against other runs on this host until the run ends."""

        self.pid = os.getpid()
        """The process that made the tracker (a forked child's copy of it is not its run)."""
        self.root_ids = (0, 0)
        self.started = False
        self.finalized = False
        self.last: dict[tuple[tuple[str, ...], str | None], tuple[int | None, float | None]] = {}
        self.open_frames: dict[int, Frame] = {}  # scopes and phases not yet exited, in any thread
        self.worker_of: tuple[int, int] | None = None
        """In a forked child: (trace id, span id) of the span open in the parent at the fork."""
        self.ending = threading.RLock()
        """Ends the run exactly once from any thread, exit hook or signal; reentrant, so an ending re-entered
        on its own thread (a truncated scope's exit) goes on. Scopes open and close under it too."""
        exit_hooks.after_fork_in_child(self, Session.continue_in_child)

    @property
    def audit_path(self) -> Path:
        return self.pipeline.audit.path

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, strict: bool | None, prometheus_port: int | None) -> None:
        """See ``ExperimentTracker.start``."""
        given = self.settings.strict if strict is None else strict
        strict_mode = truth(given, "strict", self.warner("start"))
        if strict_mode and self.settings.problems:
            raise LezeaConfigError("; ".join(self.settings.problems))
        try:
            self._start(prometheus_port)
        except Exception as error:
            if strict_mode:
                raise LezeaConfigError(f"start() failed: {type(error).__name__}: {error}") from error
            if raise_internal():
                raise
            self.warnings.warn("start", "the run could not be fully started",
                                f"{type(error).__name__}: {error}; recording to the audit only")

    def _start(self, prometheus_port: int | None) -> None:
        if self.started or self.finalized:
            return
        self.started = True
        for problem in self.settings.problems:
            self.warnings.warn("start", f"configuration problem: {problem}")  # each one, once
        if prometheus_port == 8000 and self.settings.sources.get("prometheus_port") != "default":
            prometheus_port = self.settings.prometheus_port
        worker = self.worker_of is not None
        if worker:
            self.run_dir = self.run_dir / names.WORKERS_DIR / str(os.getpid())
            self.pipeline = Pipeline(AuditWriter(self.run_dir / names.AUDIT_FILE, self.settings.audit_fsync),
                                      self.state, False)
            prometheus_port = None
        git = {} if worker else git_facts()
        resource = build_resource(
            service_name=self.settings.service_name, experiment_id=self.experiment_id,
            experiment_name=self.experiment_name, purpose=self.purpose, tags=self.tags, git=git,
            version=__version__, parent_pid=os.getppid() if worker else None, launch=self.launch.attributes(),
            environment_attributes=self.settings.sdk.get("otel_resource_attributes"))
        mode = "none" if self.settings.sdk_disabled or worker else self.settings.exporter_mode
        if mode == "process" and self.extra_exporters:
            mode = "thread"  # exporter objects cannot cross into another process
        # A forked worker's audit is followed by its parent's exporter: it starts none of its own.
        self.link = ExporterLink(mode, self.run_dir, self.settings, self.extra_exporters, self.warnings.warn,
                                 self._build_service)
        if mode != "none":  # "none": nothing serves /metrics
            self.port_held = membership.metrics_port(self.launch, self.settings.prometheus_addr,
                                                     prometheus_port, self.warner("start"), self.console)
        port = self.port_held.port if self.port_held is not None else None
        self.link.start(port, os.getpid())
        self.targets = list(self.link.targets)
        root_start_ns = time.time_ns()  # the root span's start is the experiment_start record's time
        self.root_ids = self.spans.child(self.worker_of[0] if self.worker_of else 0)  # a worker: parent trace
        parent_span_id, lane, child = self.worker_of[1] if self.worker_of else 0, False, False
        if worker:
            self.workers.watch(functools.partial(self.finalize, "run_end", None))
        else:  # a rank's or child's root in the launch's trace (lone: the fresh ids as they are)
            root = membership.root_of(self.settings, self.launch, self.experiment_id, self.root_ids)
            self.root_ids, parent_span_id = (root.trace_id, root.span_id), root.parent_span_id
            lane, child = root.rank_lane, root.child
            self.spans.child(self.root_ids[0])  # the exporter's "started" span (ids from the start record)
            self.spans.end()
            self.workers.open()
        exit_hooks.register(self, Session.finalize, worker)
        self.emit(Kind.EXPERIMENT_START, None, {
            "experiment_id": self.experiment_id, "name": self.experiment_name, "purpose": self.purpose,
            "tags": self.tags, "service_name": self.settings.service_name, "targets": self.targets,
            "run_dir": str(self.run_dir), "pid": os.getpid(), "host": host_name(),
            "max_metric_names": self.settings.max_metric_names,
            "cost_limit_eur": self.settings.cost_limit_eur, "worker": worker,
            "launch": self.launch.as_record(), "rank_lane": lane, "child": child, "prometheus_port": port,
            "spans": exports_spans(self.settings.span_ranks, self.launch, self.experiment_id),
            "resource": resource},
            time_ns=root_start_ns, parent_span_id=parent_span_id)
        if not worker:
            self.emit(Kind.ENVIRONMENT, None,
                      {**describe_environment(self.settings.env_allowlist), "git": git})
        self.pipeline.flush()  # the start of a run is on disk at once, whatever happens next
        self.console(f"experiment {self.experiment_name!r} ({self.experiment_id}) -> {self.audit_path}; "
                      + ("; ".join(self.targets[1:]) or "local mode (no OTLP endpoint configured)"))

    def finalize_call(self) -> None:
        """``finalize_experiment()``: now, or, from a signal handler that interrupted one of our own
        calls, as that call returns."""
        interrupted = exit_hooks.nested_call(sys._getframe())
        if interrupted is None:
            self.finalize("finalize_experiment", None)  # waits for an ending under way in another thread
        elif not self.finalized:
            exit_hooks.defer(interrupted, functools.partial(self.finalize, "finalize_experiment", None))

    def finalize(self, ended_by: str, error: BaseException | None) -> None:
        """End the run once, whoever comes first (a thread, an exit hook, a signal); the others wait
        for that ending. Each step is isolated: one that fails (our bug, raised at the end under
        ``LEZEA_RAISE_INTERNAL=1``) costs neither the end record nor the steps after it."""
        failures: list[Exception] = []

        def attempt(step: Callable[..., Any], *args: Any) -> None:
            try:
                step(*args)
            except Exception as failure:  # noqa: BLE001 - the run must end whatever one step does
                failures.append(failure)

        with self.ending:
            if self.finalized or (self.worker_of is not None and not self.started):
                return  # ended already, or a forked worker that never logged: nothing to end
            if not self.started:
                self.warnings.warn(ended_by, "called before start()", "the run was started and ended now")
                self.start(None, 8000)
            self.finalized = True
            exit_hooks.unregister(self)
            status = ("terminated" if ended_by == "sigterm" else "failed" if error is not None
                      else names.STATUS_ABANDONED if ended_by in ABANDONED_BY and self.worker_of is None
                      else "finished")
            for frame in sorted(self.open_frames.values(), key=lambda f: f.start_ns, reverse=True):
                attempt(self.exit_block, frame, error, ended_by)  # innermost first, marked truncated
            attempt(self.probes.drain, self.settings.shutdown_timeout_s)  # phases waiting for the GPU
            if not self.worker_of:  # live workers end their records now; theirs fold into the summary
                attempt(self.workers.end, self.run_dir, self.state, self.settings.shutdown_timeout_s)
            if self.link is not None and self.link.observes:
                link = self.link
                attempt(lambda: self.emit(Kind.RESOURCE_TOTALS, None, {
                    "observed": link.observed_totals(), "components": self.state.resource_totals()}))
            end_ns = time.time_ns()  # the root span's end is the experiment_end record's time
            duration = (end_ns - self.state.start_ns) / 1e9 if self.state.start_ns else 0.0
            attempt(lambda: self.emit(Kind.EXPERIMENT_END, None, {
                "status": status, "ended_by": ended_by, "duration_s": duration,
                "error": error_text(error) if error is not None else None, "warnings": self.warnings.count,
                **({"exception": exception_fields(error)} if error is not None else {})}, time_ns=end_ns))
            if self.root_ids[1]:
                attempt(self.spans.end)
            timeout = self.settings.shutdown_timeout_s
            attempt(self.pipeline.close, timeout)
            lost = self.pipeline.audit.loss()
            if lost:
                self.warnings.warn(ended_by, "the audit could not be written in full", lost)
            if self.link is not None:
                attempt(self.link.finish, timeout, self.pipeline.audit.seq, self.audit_path)
            if self.port_held is not None:
                attempt(self.port_held.release)
            attempt(lambda: self.console(closing_line(
                self.experiment_name, status, duration, self.state, self.warnings.count,
                self.delivery(), self.audit_path)))
        if failures:
            if raise_internal():
                raise failures[0]
            report_internal_error(ended_by, failures[0])

    def abandon(self) -> None:
        """The facade was garbage-collected, or is alive at interpreter exit, and the run was never
        finalized: it ends as ``abandoned`` with every record kept (the pipeline's flusher thread writes
        them meanwhile). A collection runs wherever the garbage collector happens to, perhaps inside one of
        our own calls on this very thread, so the ending runs on a thread of its own; at interpreter exit,
        where no new thread would run, here. A tracker never started leaves no folder behind."""
        if self.finalized or (os.getpid() != self.pid and self.worker_of is None):
            return  # ended; or a forked child's copy of a run that was not started in its parent
        if not self.started:
            self.pipeline.discard()
            return
        if not threading.main_thread().is_alive():  # interpreter exit: the main thread has stopped
            self.finalize(names.ENDED_BY_GARBAGE_COLLECTION, None)
            return
        threading.Thread(target=self.finalize, args=(names.ENDED_BY_GARBAGE_COLLECTION, None),
                         name="lezea-otel-abandoned").start()

    def delivery(self) -> dict[str, Any]:
        """``summary["delivery"]``: what the exporter delivered, per destination and signal."""
        return self.link.delivery() if self.link is not None else delivery_report("none", {})

    def sample_observers(self) -> None:
        """Tests: the exporter's observers take a sample now (thread mode)."""
        self.pipeline.flush()
        if self.link is not None:
            self.link.sample_observers()

    def sync_exporter(self) -> None:
        """Thread mode: everything recorded so far reaches the exporter's local destinations now (tests)."""
        self.pipeline.flush()
        if self.link is not None:
            self.link.sync()

    # --- records -------------------------------------------------------------------------------

    def ready(self, call: str) -> bool:
        """Auto-start on a call before ``start()``; after finalize the call reaches the audit only."""
        if self.finalized:
            self.warnings.warn(call, "called after finalize_experiment()", "recorded in the audit only")
        elif not self.started:
            if self.worker_of is None:
                self.warnings.warn(call, "called before start()", "starting the run now")
            self.start(None, 8000)
        return not self.pipeline.disabled

    def child_env(self, base: Mapping[str, str] | None) -> dict[str, str]:
        """See ``ExperimentTracker.child_env``."""
        if not self.started and not self.finalized:
            self.ready("child_env")
        _path, trace_id, span_id = self.where()
        return membership.child_environment(base, self.experiment_id, self.run_dir, trace_id, span_id,
                                            functools.partial(self.warnings.warn, "child_env"))

    def where(self) -> tuple[tuple[str, ...], int, int]:
        """The scope path, trace id and span id a record made now belongs to: those of the innermost open
        scope or phase, else the run's root span."""
        stack = self.stack.get()
        if stack:
            top = stack[-1]
            return top.path, top.trace_id, top.span_id
        return (), *self.root_ids

    def emit(self, kind: str, step: int | None, data: dict[str, Any],
             metric_values: dict[str, float] | None = None, *, time_ns: int | None = None,
             parent_span_id: int = 0) -> None:
        """One record in the innermost open scope (``parent_span_id``: a root-level span record's parent, as
        a forked worker's start record has)."""
        path, trace_id, span_id = self.where()
        when = time.time_ns() if time_ns is None else time_ns
        self.pipeline.submit(Record(kind, when, step, path, trace_id, span_id, data, metric_values,
                                    parent_span_id))

    def emit_at(self, frame: Frame, kind: str, data: dict[str, Any], time_ns: int) -> None:
        """A scope's or phase's own record: its span's ids, its time, and its parent span."""
        self.pipeline.submit(Record(kind, time_ns, None, frame.path, frame.trace_id, frame.span_id, data,
                                     None, frame.parent_span_id))

    def continue_in_child(self) -> None:
        """A forked worker (DataLoader, multiprocessing) that logs is a part of the run with its own
        identity: a new ``service.instance.id`` and ``process.pid``, its own audit and OTLP files
        under ``workers/<pid>/``, and a ``worker`` span under the scope open at the fork. Nothing is
        set up until it logs, so silent workers cost nothing; the parent's data is never touched."""
        self.ending = threading.RLock()  # one another thread of the parent held at the fork stays held
        if not self.started or self.finalized:
            return
        self.worker_of = self.where()[1:]
        self.started = False
        self.state = RunState(self.settings.max_metric_names, warn=self.warnings.warn)
        self.stack = contextvars.ContextVar(f"lezea_scope_{self.experiment_id}_{os.getpid()}", default=())
        self.open_frames, self.last = {}, {}
        self.link = None
        self.workers.in_child()
        self.probes.after_fork()
        if self.port_held is not None:  # the parent's: this worker's copy of the lock goes, not the parent's
            self.port_held.release()
            self.port_held = None

    def warner(self, call: str) -> values.Warn:
        return functools.partial(self.warnings.warn, call)

    def console(self, line: str) -> None:
        if not self.settings.quiet and self.worker_of is None:  # eight DataLoader workers, no sixteen lines
            print(f"lezea_otel: {line}", file=sys.stderr, flush=True)

    # --- scopes and phases (TracedBlock enters and exits them) -----------------------------------

    def enter_block(self, level: str | None, ident: str, attributes: dict[str, Any]) -> Frame:
        """The span's ids, the scope path, the OTel context (the user's own spans nest under it), and the
        start time as the last thing taken: what the tracker itself costs is not in the span. Under the
        ending lock, a scope opens before a finalize (and is truncated by it) or after it."""
        with self.ending:
            if not self.started or self.finalized:
                self.ready(f"{level}_scope" if level else "span")
            path, trace_id, parent_span_id = self.where()
            if level is not None:
                path = (*path, f"{level}:{ident}")
            trace_id, span_id = self.spans.child(trace_id)
            frame = Frame(path, trace_id, span_id, level, ident, parent_span_id,
                          attributes if level is None else None)
            frame.token = self.stack.set((*self.stack.get(), frame))
            context = self.otel_context
            if context == "always" or (context == "auto" and _SDK_TRACE in sys.modules):
                frame.context_token = span_ids.attach(trace_id, span_id)
            self.probes.enter(frame, level or ident)
            self.open_frames[id(frame)] = frame
            frame.start_ns = time.time_ns()
            if level is not None:
                self.emit_at(frame, Kind.SCOPE_START, {"level": level, "id": ident, **attributes},
                             frame.start_ns)
            return frame

    def open_detached(self, name: str, where: tuple[tuple[str, ...], int, int],
                      attributes: dict[str, Any]) -> Frame:
        """A phase under ``where`` (scope path, trace id, parent span id) that never enters the scope stack:
        the thread that ends it (``exit_block``) may not be the one that began it (``tracker.watch``'s
        backward and optimizer phases: autograd runs their hooks on threads of its own)."""
        with self.ending:
            if not self.started or self.finalized:
                self.ready("watch")
            path, trace_id, parent_span_id = where
            trace_id, span_id = self.spans.child(trace_id)
            frame = Frame(path, trace_id, span_id, None, name, parent_span_id, attributes)
            self.probes.enter(frame, name)
            self.open_frames[id(frame)] = frame
            frame.start_ns = time.time_ns()
            return frame

    def exit_block(self, frame: Frame, error: BaseException | None, truncated_by: str | None = None,
                   end_ns: int | None = None) -> None:
        """``end_ns``: taken by the with-block as the first thing on exit. A finalize in another thread
        truncates the open scopes: under the ending lock each ends once, and an exit already under way
        finishes before the run's end record."""
        with self.ending:
            self.open_frames.pop(id(frame), None)
            if frame.ended:  # already closed as truncated at finalize; the with-block only now unwinds
                if truncated_by is None:
                    self._leave(frame)
                return
            frame.ended = True
            self.spans.ended += 1
            if truncated_by is None:
                self._leave(frame)
            failure = None if error is None else {"error": error_text(error),
                                                  "exception": exception_fields(error)}
            self.probes.exit(frame, end_ns or time.time_ns(), failure, truncated_by)

    def discard_block(self, frame: Frame) -> None:
        """A block that ends without a record or span (``iterate``'s wait for an item that never came)."""
        with self.ending:
            self.open_frames.pop(id(frame), None)
            if not frame.ended:
                frame.ended = True
                self.spans.started -= 1
                self.probes.discard(frame)
                self._leave(frame)

    def _write_end(self, frame: Frame, end_ns: int, failure: Any, truncated_by: str | None) -> None:
        """A block's end record, built later with the batch it is written in (see Pipeline.defer)."""
        self.pipeline.defer(frame.end_record, end_ns, failure, truncated_by)

    def _leave(self, frame: Frame) -> None:
        """The scope path and the OTel context as they were before the block, in the block's own context
        (a detached phase changed neither)."""
        if frame.token is None:
            return
        try:
            self.stack.reset(frame.token)
        except ValueError:  # exited in another context (e.g. a generator): drop this frame only
            self.stack.set(tuple(f for f in self.stack.get() if f is not frame))
            return
        except RuntimeError:  # the token was used already
            return
        token, frame.context_token = frame.context_token, None
        if token is not None:
            span_ids.detach(token)
