"""The tracker facade of the LeZeA connector spec, on OpenTelemetry.

Every public call checks and shapes its input, turns it into one record and hands that to the
pipeline (audit, run state, signals). No call raises into training code: bad input gives one
warning on the ``lezea_otel`` logger and the valid part is still recorded.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._internal import exit_hooks, names, values
from ._internal.audit import AuditWriter, open_audit
from ._internal.environment import describe_environment, host_name
from ._internal.exporter_link import ExporterLink, delivery_report
from ._internal.pipeline import Pipeline
from ._internal.readable import exception_fields
from ._internal.record import Record
from ._internal.resource import build_resource, git_facts
from ._internal.run_state import RunState, closing_line
from ._internal.safety import (
    SELF,
    Warnings,
    encodable_text,
    error_text,
    flag,
    guarded,
    guarded_constructor,
    logger,
    raise_internal,
    report_internal_error,
    shielded,
)
from ._internal.scope_calls import Frame, NetworkType, ScopeCalls
from ._internal.settings import Settings, resolve_settings
from ._internal.span_ids import IdSpans, ids
from ._internal.spec_calls import SpecCalls
from .exceptions import LezeaConfigError
from .version import __version__

__all__ = ["ExperimentTracker", "NetworkType"]


def _utf8(text: str, what: str, warn: values.Warn) -> str:
    """Names go into the OTel resource of every export: one lone surrogate there would stop them all."""
    clean = encodable_text(text)
    if clean is not text:
        warn(f"{what} is not valid UTF-8 (lone surrogates)", "they were replaced with U+FFFD")
    return clean


def _name(value: Any, what: str, warn: values.Warn, fallback: str, optional: bool = False) -> str:
    """A name-like constructor argument; one whose ``__str__`` raises costs itself, not the tracker."""
    text = shielded(lambda: values.text(value, what, warn, optional=optional) or fallback, fallback, warn, what)
    return _utf8(text, what, warn)


def _tags(raw: Any, warn: values.Warn) -> list[str]:
    """Tags as text; tags that cannot be read at all (values.tags raised) are dropped, with a warning."""
    return [_utf8(tag, "tags", warn) for tag in shielded(lambda: values.tags(raw, warn), [], warn, "tags")]


def _settings(options: dict[str, Any], warn: values.Warn) -> Settings:
    """Settings from the keyword options (``resolve_settings`` never raises: bad options become problems)."""
    settings = resolve_settings(options)
    service_name = _utf8(settings.service_name, "service_name", warn)
    return settings if service_name is settings.service_name else dataclasses.replace(settings,
                                                                                    service_name=service_name)


class ExperimentTracker(ScopeCalls, SpecCalls):
    """One experiment run: a root span, its scopes and phases, metrics, events, and a local audit.

    Example:
        ```py
        tracker = ExperimentTracker("Demo", purpose="sanity", auto_start=True)
        with tracker.builder_scope("42"):
            tracker.log_training_step(1, {"loss": 0.42})
        tracker.finalize_experiment()
        ```
    Keyword-only arguments override ``LEZEA_*`` and ``OTEL_*`` variables (see README).
    """

    @guarded_constructor(fill={"experiment_name": "unnamed"}, passthrough=(LezeaConfigError,))
    def __init__(
        self,
        experiment_name: str,
        purpose: str = "",
        tags: Sequence[str] | None = None,
        auto_start: bool = False,
        async_mode: bool = False,
        *,
        runs_dir: str | Path | None = None,
        service_name: str | None = None,
        endpoint: str | None = None,
        protocol: str | None = None,
        quiet: bool | None = None,
        cost_limit_eur: float | None = None,
        extra_exporters: Sequence[Any] = (),
    ) -> None:
        self._warnings = Warnings()
        self.experiment_id = str(uuid.uuid4())
        warn = functools.partial(self._warnings.warn, "ExperimentTracker")
        # Nothing here may raise: each argument that cannot be used costs itself, with one warning.
        self.experiment_name = _name(experiment_name, "experiment_name", warn, "unnamed")
        self.purpose = _name(purpose, "purpose", warn, "", optional=True)
        self.tags = _tags(tags, warn)
        self.settings: Settings = _settings({
            "runs_dir": runs_dir, "service_name": service_name, "endpoint": endpoint, "protocol": protocol,
            "quiet": quiet, "cost_limit_eur": cost_limit_eur,
        }, warn)
        try:
            self._extra_exporters = tuple(extra_exporters)
        except Exception as error:  # noqa: BLE001 - not iterable, or a generator that fails
            warn("extra_exporters must be a sequence of exporters or readers", f"{error_text(error)}; ignored")
            self._extra_exporters = ()
        try:
            self.run_dir, audit = open_audit(self.settings.runs_dir, self.experiment_id, warn,
                                             self.settings.audit_fsync)
        except (OSError, ValueError) as error:  # a NUL byte in the path, a name the OS refuses outright
            fallback = Path("runs") if self.settings.runs_dir != Path("runs") else Path(tempfile.gettempdir())
            warn("runs_dir cannot be used", f"{error_text(error)}; writing the run under {fallback.absolute()}")
            self.settings = dataclasses.replace(self.settings, runs_dir=fallback)
            self.run_dir, audit = open_audit(fallback, self.experiment_id, warn, self.settings.audit_fsync)
        self._state = RunState(self.settings.max_metric_names, warn=self._warnings.warn)
        self._pipeline = Pipeline(audit, self._state, flag(async_mode, "async_mode", warn))
        self._stack: contextvars.ContextVar[tuple[Frame, ...]] = contextvars.ContextVar(
            f"lezea_scope_{self.experiment_id}", default=())
        self._spans = IdSpans()
        self._link: ExporterLink | None = None
        self._targets: list[str] = []

        self._root: Any = None
        self._root_ids = (0, 0)
        self._started = False
        self._finalized = False
        self._last: dict[tuple[tuple[str, ...], str | None], tuple[int | None, float | None]] = {}
        self._open: dict[int, Frame] = {}  # scopes and phases not yet exited, in any thread
        self._worker_of: Any = None  # in a forked child: the span open in the parent at the fork
        exit_hooks.after_fork_in_child(self, ExperimentTracker._continue_in_child)
        if flag(auto_start, "auto_start", warn):
            self.start()

    @property
    def audit_path(self) -> Path:
        return self._pipeline.audit.path

    # --- lifecycle ---------------------------------------------------------------------------

    @guarded(default=SELF, passthrough=(LezeaConfigError,))
    def start(self, strict: bool | None = None, prometheus_port: int | None = 8000) -> ExperimentTracker:
        """Open the run: root span, signal pipelines, ``/metrics`` endpoint, environment and git.

        Configuration problems are warned here, and raised (``LezeaConfigError``) only when
        ``strict`` (or ``LEZEA_STRICT=1``) is set. ``prometheus_port=None`` or ``0`` serves no
        ``/metrics``; a busy port is one warning. Returns the tracker; a second call does nothing.
        """
        strict_mode = self.settings.strict if strict is None else bool(strict)
        if strict_mode and self.settings.problems:
            raise LezeaConfigError("; ".join(self.settings.problems))
        try:
            self._start(prometheus_port)
        except Exception as error:
            if strict_mode:
                raise LezeaConfigError(f"start() failed: {type(error).__name__}: {error}") from error
            if raise_internal():
                raise
            self._warnings.warn("start", "the run could not be fully started",
                                f"{type(error).__name__}: {error}; recording to the audit only")
        return self

    def _start(self, prometheus_port: int | None) -> None:
        if self._started or self._finalized:
            return
        self._started = True
        for problem in self.settings.problems:
            self._warnings.warn("start", f"configuration problem: {problem}")  # each one, once
        if prometheus_port == 8000 and self.settings.sources.get("prometheus_port") != "default":
            prometheus_port = self.settings.prometheus_port
        worker = self._worker_of is not None
        if worker:
            self.run_dir = self.run_dir / names.WORKERS_DIR / str(os.getpid())
            self._pipeline = Pipeline(AuditWriter(self.run_dir / names.AUDIT_FILE, self.settings.audit_fsync),
                                      self._state, False)
            prometheus_port = None
        git = {} if worker else git_facts()
        resource = build_resource(
            service_name=self.settings.service_name, experiment_id=self.experiment_id,
            experiment_name=self.experiment_name, purpose=self.purpose, tags=self.tags, git=git,
            version=__version__, parent_pid=os.getppid() if worker else None, ranks=self.settings.ranks,
            environment_attributes=self.settings.sdk.get("otel_resource_attributes"))
        constant = {names.EXPERIMENT_ID: self.experiment_id, names.EXPERIMENT_NAME: self.experiment_name}
        mode = "none" if self.settings.sdk_disabled or worker else self.settings.exporter_mode
        if mode == "process" and self._extra_exporters:
            mode = "thread"  # exporter objects cannot cross into another process
        # A forked worker's audit is followed by its parent's exporter: it starts none of its own.
        self._link = ExporterLink(mode, self.run_dir, self.settings, self._extra_exporters, self._warnings.warn)
        self._link.start(self._port(prometheus_port), os.getpid())
        self._targets = list(self._link.targets)
        root_start_ns = time.time_ns()  # the root span's start is the experiment_start record's time
        self._root = self._spans.start(names.WORKER_SPAN_NAME if worker else names.ROOT_SPAN_NAME, {
            **constant, names.EXPERIMENT_PURPOSE: self.purpose, names.EXPERIMENT_TAGS: list(self.tags)},
            self._worker_of, root_start_ns)
        self._root_ids = ids(self._root)
        if not worker:
            self._spans.end(self._spans.start(names.STARTED_SPAN_NAME, constant, self._root))
        exit_hooks.register(self, ExperimentTracker._finalize, worker)
        self._emit("experiment_start", None, {
            "experiment_id": self.experiment_id, "name": self.experiment_name, "purpose": self.purpose,
            "tags": self.tags, "service_name": self.settings.service_name, "targets": self._targets,
            "run_dir": str(self.run_dir), "pid": os.getpid(), "host": host_name(),
            "max_metric_names": self.settings.max_metric_names, "worker": worker,
            "resource": resource},
            time_ns=root_start_ns, parent_span_id=ids(self._worker_of)[1] if worker else 0)
        if not worker:
            self._emit("environment", None, {**describe_environment(self.settings.env_allowlist), "git": git})
        self._pipeline.flush()  # the start of a run is on disk at once, whatever happens next
        self._console(f"experiment {self.experiment_name!r} ({self.experiment_id}) -> {self.audit_path}; "
                      + ("; ".join(self._targets[1:]) or "local mode (no OTLP endpoint configured)"))

    def _port(self, port: Any) -> int | None:
        if port is None or port == 0:
            return None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            self._warnings.warn("start", "prometheus_port must be a port number, None or 0",
                                f"got {values.describe(port)}; /metrics is off")
            return None
        return port

    @guarded()
    def finalize_experiment(self) -> dict[str, Any] | None:
        """End the run: flush everything (bounded by ``LEZEA_SHUTDOWN_TIMEOUT``), return the summary.

        Idempotent, and safe from any thread (from several at once) and from a signal handler: the
        run ends exactly once. A handler that interrupted one of this package's own calls ends the
        run as that call returns, never in the middle of it, and gets the summary so far.
        ``end()`` is the same call.
        """
        interrupted = exit_hooks.nested_call(sys._getframe())
        if interrupted is None:
            self._finalize("finalize_experiment", None)  # waits for an ending under way in another thread
        elif not self._finalized:
            exit_hooks.defer(interrupted, functools.partial(self._finalize, "finalize_experiment", None))
        return self.get_experiment_summary()

    @guarded()
    def end(self) -> dict[str, Any] | None:
        """Alias of :meth:`finalize_experiment`."""
        return self.finalize_experiment()

    def _finalize(self, ended_by: str, error: BaseException | None) -> None:
        """End the run once, whoever comes first (a thread, an exit hook, a signal); the others wait
        for that ending. Each step is isolated: one that fails (our bug, raised at the end under
        ``LEZEA_RAISE_INTERNAL=1``) costs neither the end record nor the steps after it."""
        failures: list[Exception] = []

        def attempt(step: Callable[..., Any], *args: Any) -> None:
            try:
                step(*args)
            except Exception as failure:  # noqa: BLE001 - the run must end whatever one step does
                failures.append(failure)

        with exit_hooks.ending_lock(self):
            if self._finalized or (self._worker_of is not None and not self._started):
                return  # ended already, or a forked worker that never logged: nothing to end
            if not self._started:
                self._warnings.warn(ended_by, "called before start()", "the run was started and ended now")
                self.start()
            self._finalized = True
            exit_hooks.unregister(self)
            status = "terminated" if ended_by == "sigterm" else "failed" if error is not None else "finished"
            for frame in sorted(self._open.values(), key=lambda f: f.start_ns, reverse=True):
                attempt(self._exit_block, frame, error, ended_by)  # innermost first, marked truncated
            if self._link is not None and self._link.observes:
                link = self._link
                attempt(lambda: self._emit("resource_totals", None, {
                    "observed": link.observed_totals(), "components": self._state.resource_totals()}))
            end_ns = time.time_ns()  # the root span's end is the experiment_end record's time
            duration = (end_ns - self._state.start_ns) / 1e9 if self._state.start_ns else 0.0
            attempt(lambda: self._emit("experiment_end", None, {
                "status": status, "ended_by": ended_by, "duration_s": duration,
                "error": error_text(error) if error is not None else None, "warnings": self._warnings.count,
                **({"exception": exception_fields(error)} if error is not None else {})}, time_ns=end_ns))
            if self._root is not None:
                attempt(self._spans.end, self._root, error, end_ns, {names.RUN_STATUS: status,
                                                                     names.RUN_ENDED_BY: ended_by})
            timeout = self.settings.shutdown_timeout_s
            attempt(self._pipeline.close, timeout)
            lost = self._pipeline.audit.loss()
            if lost:
                self._warnings.warn(ended_by, "the audit could not be written in full", lost)
            if self._link is not None:
                attempt(self._close_exporter, timeout)
            attempt(lambda: self._console(closing_line(
                self.experiment_name, status, duration, self._state, self._warnings.count,
                self._delivery(), self.audit_path)))
        if failures:
            if raise_internal():
                raise failures[0]
            report_internal_error(ended_by, failures[0])

    def _delivery(self) -> dict[str, Any]:
        """``summary["delivery"]``: what the exporter delivered, per destination and signal."""
        link = self._link
        return delivery_report(link.mode, link.current()) if link is not None else delivery_report("none", {})

    def _close_exporter(self, timeout: float) -> None:
        if self._link is not None and not self._link.close(timeout):
            logger.warning("finalize: the exporter did not deliver the run within %.1f s (LEZEA_SHUTDOWN_TIMEOUT); "
                           "the audit %s holds the rest: lezea-otel export %s", timeout, self.audit_path,
                           self.run_dir)

    def _sample_observers(self) -> None:
        """Tests: the exporter's observers take a sample now (thread mode)."""
        self._pipeline.flush()
        if self._link is not None:
            self._link.sample_observers()

    def _sync_exporter(self) -> None:
        """Thread mode: everything recorded so far reaches the exporter's local destinations now (tests)."""
        self._pipeline.flush()
        if self._link is not None:
            self._link.sync()

    # --- records -------------------------------------------------------------------------------

    def _ready(self, call: str) -> bool:
        """Auto-start on a call before ``start()``; after finalize the call reaches the audit only."""
        if self._finalized:
            self._warnings.warn(call, "called after finalize_experiment()", "recorded in the audit only")
        elif not self._started:
            if self._worker_of is None:
                self._warnings.warn(call, "called before start()", "starting the run now")
            self.start()
        return not self._pipeline.disabled

    def _emit(self, kind: str, step: int | None, data: dict[str, Any], metric_values: dict[str, float] | None = None,
              *, time_ns: int | None = None, parent_span_id: int = 0) -> None:
        stack = self._stack.get()
        when = time.time_ns() if time_ns is None else time_ns
        if stack:
            top = stack[-1]
            record = Record(kind, when, step, top.path, top.trace_id, top.span_id, data, metric_values)
        else:
            trace_id, span_id = self._root_ids
            record = Record(kind, when, step, (), trace_id, span_id, data, metric_values, parent_span_id)
        self._pipeline.submit(record)

    def _emit_at(self, frame: Frame, kind: str, data: dict[str, Any], time_ns: int) -> None:
        """A scope's or phase's own record: its span's ids, its time, and its parent span."""
        self._pipeline.submit(Record(kind, time_ns, None, frame.path, frame.trace_id, frame.span_id, data,
                                     None, frame.parent_span_id))

    def _continue_in_child(self) -> None:
        """A forked worker (DataLoader, multiprocessing) that logs is a part of the run with its own
        identity: a new ``service.instance.id`` and ``process.pid``, its own audit and OTLP files
        under ``workers/<pid>/``, and a ``worker`` span under the scope open at the fork. Nothing is
        set up until it logs, so silent workers cost nothing; the parent's data is never touched."""
        exit_hooks.forget_ending_lock(self)
        if not self._started or self._finalized:
            return
        stack = self._stack.get()
        self._worker_of = stack[-1].span if stack else self._root
        self._started = False
        self._state = RunState(self.settings.max_metric_names, warn=self._warnings.warn)
        self._stack = contextvars.ContextVar(f"lezea_scope_{self.experiment_id}_{os.getpid()}", default=())
        self._open, self._last = {}, {}
        self._link = None

    def _warner(self, call: str) -> values.Warn:
        return functools.partial(self._warnings.warn, call)

    def _console(self, line: str) -> None:
        if not self.settings.quiet and self._worker_of is None:  # eight DataLoader workers, no sixteen lines
            print(f"lezea_otel: {line}", file=sys.stderr, flush=True)
